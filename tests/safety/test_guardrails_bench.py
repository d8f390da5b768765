"""benchmarks/guardrails.py's --lexicons option: a candidate word list is refused with a clear message when it is
missing or malformed (the full run takes minutes and lives in the benchmark)."""

import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from guardrails import main  # noqa: E402


def test_a_missing_word_list_is_refused(tmp_path):
    with pytest.raises(SystemExit, match="--lexicons: no file at"):
        main(["--lexicons", str(tmp_path / "nope.json"), "--out", "unused"])


def test_a_malformed_word_list_is_refused(tmp_path):
    bad = tmp_path / "lexicons.json"
    bad.write_text(json.dumps({"categories": {}}), encoding="utf-8")  # no "sets"
    with pytest.raises(SystemExit, match="not a usable word list"):
        main(["--lexicons", str(bad), "--out", "unused"])


def test_a_word_list_whose_name_list_is_missing_is_refused(tmp_path):
    shipped = Path(__file__).resolve().parents[2] / "incasa" / "safety" / "data" / "lexicons.json"
    copy = tmp_path / "lexicons.json"  # public_figures.json is not beside it
    copy.write_text(shipped.read_text(encoding="utf-8"), encoding="utf-8")
    with pytest.raises(SystemExit, match="not a usable word list"):
        main(["--lexicons", str(copy), "--out", "unused"])
