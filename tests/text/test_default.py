"""The shipped default: within budget, loadable, documented, and it answers a definition question in form."""

import json
import re
from pathlib import Path

from incasa.text.chat import DEFAULT_CHECKPOINT, chat, load_model

DEFAULT = Path(DEFAULT_CHECKPOINT).parent


def test_default_files_are_there_and_small():
    assert DEFAULT_CHECKPOINT.stat().st_size <= 25 * 1024 * 1024
    assert (DEFAULT / "curve.png").stat().st_size > 0
    rows = [json.loads(line) for line in (DEFAULT / "metrics.jsonl").read_text().splitlines()]
    val = [r["val_loss"] for r in rows if "val_loss" in r]
    assert len(val) >= 2 and val[-1] < val[0]  # it learned
    assert "incasa train text" in (DEFAULT / "TRAINING.txt").read_text()


def test_default_answers_a_definition_question_in_the_trained_form():
    tm = load_model(device="cpu")
    assert tm.meta["preset"] == "small" and tm.meta["kind"] == "incasa-text-moe"
    stream = chat([{"role": "user", "content": "What does dog mean?"}], model=tm, max_tokens=40, temperature=0)
    reply = "".join(stream)
    # the pairs it learned read "word (part of speech): definition." -- the form, not yet the right word
    assert re.match(r"^[\w' -]+ \((noun|verb|adjective|adverb)\): \w", reply), reply
    assert stream.usage["completion_tokens"] > 3
