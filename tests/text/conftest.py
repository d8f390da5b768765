"""Text fixtures: a tiny corpus of definitions and chats, and a tiny trained checkpoint (seconds on CPU)."""

import json

import pytest

WORDS = {
    "dog": "a domesticated animal that barks", "cat": "a small animal that purrs", "sun": "the star at the centre",
    "rain": "water falling from clouds", "tree": "a tall plant with a trunk", "river": "a stream of water",
    "bread": "food baked from flour", "book": "written pages bound together", "city": "a large town",
    "song": "a short piece of music", "snow": "frozen rain", "lamp": "a device that gives light",
}


def make_corpus(root, repeat: int = 3):
    """Pairs ("What does X mean?" -> "X (noun): ...") as JSONL, plus one plain .txt document."""
    root.mkdir(parents=True, exist_ok=True)
    lines = []
    for _ in range(repeat):
        for w, d in WORDS.items():
            lines.append({"messages": [{"role": "user", "content": f"What does {w} mean?"},
                                       {"role": "assistant", "content": f"{w} (noun): {d}."}]})
            lines.append({"text": f"The word {w} means {d}. Il {w} è bello."})
    (root / "pairs.jsonl").write_text("".join(json.dumps(x, ensure_ascii=False) + "\n" for x in lines))
    (root / "notes.txt").write_text("Plain text a user brings: " + " ".join(WORDS) + ".\n")
    return root


@pytest.fixture
def tiny_corpus(tmp_path):
    return make_corpus(tmp_path / "corpus")


def tiny_train_config(data, out, **kw):
    from incasa.text.train import TrainConfig

    base = dict(data=str(data), out=str(out), preset="tiny", vocab_size=300, seq_len=32, steps=6, batch_size=4,
                warmup=2, lr=3e-3, log_every=1, eval_every=1000, ckpt_every=1000, eval_batches=2)
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def text_checkpoint(tmp_path_factory):
    from incasa.text.train import train

    root = tmp_path_factory.mktemp("text")
    data = make_corpus(root / "corpus")
    train(tiny_train_config(data, root / "run", steps=120, lr=1e-2, batch_size=8, warmup=10))  # answers in form
    return root / "run" / "model.safetensors"
