"""benchmarks/guardrails_thresholds.py: the threshold search on tiny made-up scores (the run on the real sets takes
~2 min and lives in the benchmark), its refusals, and the metadata-only copy of a classifier file."""

import json
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from guardrails_thresholds import blocked, main, parse_args, search, write_thresholds  # noqa: E402

GRID = [0.7, 0.8, 0.9, 0.95]


def scores():
    """Two categories, 4 red-team and 3 benign prompts. Shipped thresholds (0.9, 0.9) block red 0 and 1 and benign 4.
    Lowering category 0 to 0.7 blocks red 2 and 3 and benign 5; raising category 1 to 0.95 frees benign 4 but loses
    nothing (red 1 is 0.97). So the best within the shipped benign count (1) is (0.7, 0.95): 4 red, 1 benign."""
    probs_NC = np.array([[0.95, 0.1], [0.1, 0.97], [0.75, 0.1], [0.72, 0.1],   # red-team
                         [0.1, 0.92], [0.71, 0.1], [0.2, 0.2]])                  # benign
    red_N = np.array([True] * 4 + [False] * 3)
    return np.zeros(7, dtype=bool), probs_NC, red_N, np.array([0.9, 0.9])


def test_blocked_is_the_lexicon_or_any_category_at_its_threshold():
    lexicon, probs, _, shipped = scores()
    assert blocked(lexicon, probs, shipped).tolist() == [True, True, False, False, True, False, False]
    lexicon[6] = True
    assert blocked(lexicon, probs, shipped)[6]


def test_search_reallocates_the_same_benign_cost():
    lexicon, probs, red, shipped = scores()
    chosen = search(lexicon, probs, red, shipped, GRID)
    assert chosen.tolist() == [0.7, 0.95]
    b = blocked(lexicon, probs, chosen)
    assert b[red].sum() == 4 and b[~red].sum() == 1  # shipped: 2 and 1


def test_down_only_never_raises_a_threshold():
    lexicon, probs, red, shipped = scores()
    chosen = search(lexicon, probs, red, shipped, GRID, down_only=True)
    assert (chosen <= shipped).all()
    # lowering category 0 would cost benign 5 with benign 4 still blocked: nothing can move
    assert chosen.tolist() == [0.9, 0.9]


def test_bad_sets_are_refused(capsys):
    with pytest.raises(SystemExit) as stop:
        parse_args(["--test", "fresh99"])
    assert stop.value.code == 2 and "unknown sets ['fresh99']" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        parse_args(["--calibration", "fresh30", "--test", "fresh30"])
    assert "both calibration and test" in capsys.readouterr().err


def test_training_sets_are_refused_before_any_scoring():
    with pytest.raises(SystemExit, match=r"\['fresh22'\] are the classifier's training data"):
        main(["--calibration", "fresh22", "--test", "fresh31", "--out", "never_written"])
    assert not (Path(__file__).resolve().parents[2] / "benchmarks" / "results" / "never_written.json").exists()


def test_write_thresholds_changes_the_metadata_only(tmp_path):
    from safetensors import safe_open
    from safetensors.numpy import save_file

    source, target = tmp_path / "c.safetensors", tmp_path / "d.safetensors"
    save_file({"coef": np.arange(6, dtype=np.float16).reshape(2, 3)}, str(source),
              metadata={"thresholds": json.dumps({"a": 0.8, "b": 0.9}), "classes": "[]"})
    write_thresholds(source, target, {"a": 0.7, "b": 0.95})
    with safe_open(str(target), framework="np") as f:
        assert json.loads(f.metadata()["thresholds"]) == {"a": 0.7, "b": 0.95} and f.metadata()["classes"] == "[]"
        assert f.get_tensor("coef").tolist() == np.arange(6, dtype=np.float16).reshape(2, 3).tolist()
    with pytest.raises(ValueError, match="categories differ"):
        write_thresholds(source, target, {"a": 0.7})
