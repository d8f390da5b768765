"""Speed of the voice models alone on a GPU: seconds to synthesise ~60 s of speech, front end excluded.

The text front end (gruut, pure Python) is not on the GPU machine and runs on the CPU anyway, so this times only what
the GPU does: the acoustic model + the iSTFT vocoder (fp32, eager) on benchmarks/data/tts_bench_phones.json, 14
held-out sentences already phonemised by incasa.voice.frontend (63.5 s of audio with the shipped voice). Three ways,
each after a warm-up, median of 5: all sentences in one padded batch, batches of 8, one sentence at a time.
Issue 8's goal: 60 s of audio in <= 0.1 s on an H100. tts_speed.py measures the whole path, front end included.

    python benchmarks/tts_speed_models.py [--checkpoint PATH] [--device cuda]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from benchmarks.common import write_result  # noqa: E402
from incasa.voice.speak import _render, load_voice  # noqa: E402

PHONES = Path(__file__).parent / "data" / "tts_bench_phones.json"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--checkpoint", default=None, help="voice model (default: shipped)")
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    seqs = [tuple(s) for s in json.loads(PHONES.read_text())]
    lv = load_voice(args.checkpoint, args.device)

    def sync():
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()

    ways = {
        "one_batch": lambda: _render(lv, seqs, 0, 1.0, 0.0, 0.0),
        "batched_8": lambda: [w for i in range(0, len(seqs), 8) for w in _render(lv, seqs[i:i + 8], 0, 1.0, 0.0, 0.0)],
        "sequential": lambda: [_render(lv, [s], 0, 1.0, 0.0, 0.0)[0] for s in seqs],
    }
    rows = {}
    with torch.inference_mode():
        for name, fn in ways.items():
            fn()
            sync()
            times = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                out = fn()
                sync()
                times.append(time.perf_counter() - t)
            audio_s = sum(len(w) for w in out) / lv.sample_rate
            med = statistics.median(times)
            rows[name] = {"audio_s": audio_s, "median_s": med, "s_per_60s": med * 60 / audio_s}
            print(f"{name:11s} {audio_s:6.1f} s of audio in {med * 1000:8.1f} ms -> {med * 60 / audio_s * 1000:7.1f} ms "
                  f"per 60 s")
    name = "tts_speed_models_" + ("gpu" if args.device.startswith("cuda") else "cpu")
    print("wrote", write_result(name, {"settings": vars(args), **rows}))


if __name__ == "__main__":
    main()
