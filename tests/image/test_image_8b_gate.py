"""benchmarks/image_8b.py's bookkeeping, which runs on the GPU machine where a mistake costs device time: processes
sharing a --gate time strictly in turn, a failed arm never blocks the others, and --merge keeps where and when each
part was measured."""

import importlib.util
import json
import sys
import threading
import time
import types
from pathlib import Path

import pytest

BENCH = Path(__file__).parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def bench():
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location("image_8b_under_test", BENCH / "image_8b.py")
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.path.remove(str(BENCH))


def _args(gate, turn, of=2, timeout=20.0):
    return types.SimpleNamespace(gate=str(gate), turn=turn, of=of, gate_timeout=timeout)


def test_turns_wait_for_every_warm_up_and_never_overlap(bench, tmp_path):
    spans = {}

    def arm(turn, warm_up_s):
        time.sleep(warm_up_s)  # turn 0 warms up last: turn 1 must still wait for it, then go after it
        bench._wait_turn(_args(tmp_path, turn))
        start = time.monotonic()
        time.sleep(0.3)
        spans[turn] = (start, time.monotonic())
        bench._done(_args(tmp_path, turn))

    ready_at = time.monotonic()
    threads = [threading.Thread(target=arm, args=(0, 0.6)), threading.Thread(target=arm, args=(1, 0.0))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert spans[0][0] - ready_at >= 0.6
    assert spans[1][0] >= spans[0][1]


def test_a_failed_arm_frees_the_gate_and_a_missing_one_times_out(bench, tmp_path):
    bench._done(_args(tmp_path / "a", 0))  # turn 0 died before warming up: main() marks it done
    t0 = time.monotonic()
    bench._wait_turn(_args(tmp_path / "a", 1))
    assert time.monotonic() - t0 < 2.0
    with pytest.raises(TimeoutError, match="other arms"):
        bench._wait_turn(_args(tmp_path / "b", 1, timeout=0.6))


def test_merge_keeps_each_parts_date_and_refuses_mixed_devices(bench, tmp_path, monkeypatch):
    import common

    monkeypatch.setattr(common, "RESULTS", tmp_path)
    env = {"device": "NVIDIA H200", "commit": "abc1234", "torch": "2.11.0", "python": "3.12.3"}
    parts = {"image_8b_incasa": ("2026-11-25T11:54:58+00:00", "incasa", 8.0),
             "image_8b_flux": ("2026-11-25T12:00:40+00:00", "flux", 10.0)}
    for name, (date, arm, secs) in parts.items():
        rows = [{"arm": arm, "five_variants_s": secs, "few_step_s": secs / 8}]
        (tmp_path / f"{name}.json").write_text(json.dumps({**env, "date": date, "settings": {"arms": arm},
                                                           "rows": rows}))
    bench._merge(list(parts), "merged", note="two calls")
    merged = json.loads((tmp_path / "merged.json").read_text())
    assert merged["device"] == "NVIDIA H200" and merged["commit"] == "abc1234"  # not this machine's
    assert [r["measured"] for r in merged["rows"]] == [d for d, _, _ in parts.values()]
    assert merged["ratios"] == {"flux_over_incasa": 1.25, "flux_over_incasa_few_step": 1.25}
    assert merged["settings"]["arms"] == "incasa,flux" and merged["note"] == "two calls"

    other = json.loads((tmp_path / "image_8b_flux.json").read_text())
    (tmp_path / "image_8b_flux.json").write_text(json.dumps({**other, "device": "NVIDIA H100 80GB HBM3"}))
    with pytest.raises(SystemExit, match="different devices"):
        bench._merge(list(parts), "merged")
