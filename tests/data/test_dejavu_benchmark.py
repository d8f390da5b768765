"""benchmarks/dejavu.py's operating points: the plain one (precision >= 0.99 on calibration) and the margin one."""

import importlib.util
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("dejavu_bench_under_test", BENCH / "dejavu.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def _queries(num_true: int, false_scores: list[float]) -> list[dict]:
    """num_true copies found at scores 0.5..0.99 (spread evenly), and negatives matched at ``false_scores``."""
    out = [{"positive": True, "twins": {"a"}, "ours": ("a", 0.5 + 0.49 * i / num_true)} for i in range(num_true)]
    out += [{"positive": False, "twins": {"n"}, "ours": ("a", s)} for s in false_scores]
    return out


def test_the_margin_point_keeps_one_standard_error_of_false_matches_in_hand(bench):
    # 1,000 copies; 12 false matches: 3 among the surest copies, 9 among the least sure
    qs = _queries(1000, [0.96, 0.965, 0.97] + [0.5 + 0.005 * k for k in range(1, 10)])
    grid = sorted({q["ours"][1] for q in qs} | {1.0})
    plain = bench.calibrate(qs, "ours", grid)
    margin = bench.calibrate_margin(qs, "ours", grid)
    at_plain, at_margin = bench.score(qs, "ours", plain), bench.score(qs, "ours", margin)
    assert at_plain["precision"] >= 0.99 and at_margin["precision"] >= 0.99
    assert margin > plain
    fp = at_margin["false_positives"]
    accepted = round(at_margin["recall"] * 1000) + fp
    assert fp + fp ** 0.5 <= 0.01 * accepted
    # one grid step looser breaks the margin rule
    looser = max(t for t in grid if t < margin)
    r = bench.score(qs, "ours", looser)
    fp2 = r["false_positives"]
    assert fp2 + fp2 ** 0.5 > 0.01 * (round(r["recall"] * 1000) + fp2)


def test_with_no_false_match_at_all_the_margin_point_is_the_plain_point(bench):
    qs = _queries(200, [])
    grid = sorted({q["ours"][1] for q in qs} | {1.0})
    assert bench.calibrate_margin(qs, "ours", grid) == bench.calibrate(qs, "ours", grid) == min(grid)
