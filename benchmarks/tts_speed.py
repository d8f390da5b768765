"""Speed of the voice: how long it takes to synthesise ~60 s of speech, and the real-time factor (x real time).

Text: held-out sentences of incasa/voice/sentences_en.txt (never trained on), concatenated until the output
is about --seconds long. Three ways are timed, each after a warm-up, median of --repeats runs:
    front end    normalisation + sentence split + G2P alone (pure Python, gruut)
    streaming    incasa.voice.speak.stream: one sentence at a time through the models (lowest latency)
    batched      incasa.voice.speak.synthesize: sentences in padded batches of 8 (highest throughput)
"x real time" = seconds of audio / seconds of wall clock, front end included. On a GPU the acoustic model and the
vocoder run in fp32 (they are small; launch overhead, not arithmetic, dominates).

    python benchmarks/tts_speed.py [--device cpu|cuda] [--threads 2] [--seconds 60] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from benchmarks.common import write_result  # noqa: E402
from incasa.voice.frontend import phonemize  # noqa: E402
from incasa.voice.speak import load_voice, stream, synthesize  # noqa: E402

SENTENCES = Path(__file__).resolve().parents[1] / "incasa" / "voice" / "sentences_en.txt"


def timed(fn, repeats: int) -> tuple[float, object]:
    out = fn()  # warm-up (allocations, lazy imports, gruut models, CUDA kernels)
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return statistics.median(times), out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--voice", default=None)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    lv = load_voice(args.checkpoint, args.device)
    held = SENTENCES.read_text().splitlines()[-100:]
    # grow the text until the audio is long enough (speech here runs at ~2.7 words per second)
    words = int(args.seconds * 2.7)
    text, n = [], 0
    for s in held * 3:
        text.append(s)
        n += len(s.split())
        if n >= words:
            break
    text = " ".join(text)
    kw = dict(voice=args.voice, checkpoint=args.checkpoint, device=args.device)

    t_front, _ = timed(lambda: phonemize(text), args.repeats)
    t_batch, (audio, sr) = timed(lambda: synthesize(text, **kw), args.repeats)
    t_stream, pieces = timed(lambda: list(stream(text, **kw)), args.repeats)
    seconds = len(audio) / sr
    first = time.perf_counter()
    next(iter(stream(text, **kw)))
    t_first = time.perf_counter() - first

    rows = {
        "front_end_s": t_front,
        "batched_s": t_batch,
        "streaming_s": t_stream,
        "first_sentence_latency_s": t_first,
        "audio_seconds": seconds,
        "batched_x_realtime": seconds / t_batch,
        "streaming_x_realtime": seconds / t_stream,
        "batched_s_per_60s_audio": t_batch * 60 / seconds,
    }
    table = Table(title=f"TTS speed on {args.device} ({args.threads} threads), {seconds:.1f} s of audio")
    table.add_column("what")
    table.add_column("seconds", justify="right")
    table.add_column("x real time", justify="right")
    table.add_row("front end only", f"{t_front:.3f}", f"{seconds / t_front:.1f}")
    table.add_row("batched (synthesize)", f"{t_batch:.3f}", f"{seconds / t_batch:.1f}")
    table.add_row("streaming (stream)", f"{t_stream:.3f}", f"{seconds / t_stream:.1f}")
    table.add_row("first sentence latency", f"{t_first:.3f}", "")
    Console().print(table)
    params = sum(p.numel() for p in lv.model.parameters())
    name = "tts_speed_" + ("gpu" if args.device.startswith("cuda") else "cpu")
    path = write_result(name, {"threads": args.threads, "params": params, "sample_rate": sr,
                               "checkpoint": str(args.checkpoint or "shipped default"), **rows})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
