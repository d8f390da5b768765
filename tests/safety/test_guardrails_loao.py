"""benchmarks/guardrails_loao.py refuses what it cannot measure, with a message and no traceback (the run itself takes
~15 min on one core and lives in the benchmark, not here)."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from guardrails_loao import DEFAULT_SETS, main, parse_args  # noqa: E402


def test_defaults_are_the_ten_sealed_protocol_authors_and_the_shipped_weight():
    from incasa.safety.classifier import DEFAULT_FRESH_WEIGHT

    args = parse_args([])
    assert args.sets == [f"fresh{n}" for n in range(13, 23)] == list(DEFAULT_SETS)
    assert args.fresh_weight == DEFAULT_FRESH_WEIGHT and not args.orgs and not args.no_names


def test_bad_options_are_refused_before_any_fit(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--fresh-weight", "0"])
    assert stop.value.code == 2 and "must be positive" in capsys.readouterr().err
    with pytest.raises(SystemExit, match=r"\['fresh23'\] are not training data here"):
        main(["--sets", "fresh23", "--out", "never_written"])  # a held-out set: leaving it out measures nothing
    assert not (Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "never_written.json").exists()
