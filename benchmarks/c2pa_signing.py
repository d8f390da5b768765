"""Benchmark C2PA content credentials: time to sign, verify and strip a 1024 x 1024 image (PNG, JPEG, WebP).

    python benchmarks/c2pa_signing.py [--n 10]     # ~10 s on 2 CPU cores

Goal (issue 7): signing <= 150 ms per 1024^2 image. The image is a photograph (scikit-learn's china.jpg,
CC-BY 2.0) resized to 1024 x 1024 and encoded once per format; signing uses a fresh development chain in a
temporary folder (ES256, no timestamp authority, no thumbnail), i.e. exactly what `incasa generate` does.
Times include the input checks (a full decode of the image to catch truncation) and c2pa-rs hashing the file.

Where the wall time goes. Every call is timed three ways: wall clock, this process's CPU time, and the time
the thread spent runnable but waiting for a core (Linux `/proc/thread-self/schedstat`, field 2). Wall minus CPU
minus run-queue wait is what is left for blocking: file I/O, fsync, sleeping. `sign_image` touches the disk
only to read two small PEM files (no temp files, no fsync; c2pa-rs signs from one memory stream into another),
so on an idle machine wall == CPU. An earlier result here (PNG 742 ms wall vs 26 ms CPU, Nov 2026) was a
benchmark run under `nice -n 10` while the lead's training held both cores at nice 0: a nice-10 task gets
~1/10 of a core's share from the Linux scheduler, and the difference was run-queue wait, not I/O.
`--contend N` reproduces that on purpose (N busy processes at nice 0 while the benchmark runs niced).
The CPU time splits further into the decode check (`check_ms`) and the rest (c2pa-rs: hash + COSE signature).
Writes benchmarks/results/c2pa_signing.json (device, date, commit, load average, niceness).
"""

from __future__ import annotations

import argparse
import io
import multiprocessing
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from PIL import Image
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

from incasa.safety.provenance import check_image_bytes, create_dev_keys, sign_image, strip, verify

SCHEDSTAT = Path("/proc/thread-self/schedstat")


def run_queue_wait_ns() -> int:
    """Nanoseconds this thread has spent runnable but not running (0 where the kernel does not say)."""
    try:
        return int(SCHEDSTAT.read_text().split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def timed(fn, n: int) -> tuple[dict, object]:
    """Median wall, CPU and run-queue-wait milliseconds of n calls, plus the last result."""
    wall, cpu, wait, result = [], [], [], None
    for _ in range(n):
        start, start_cpu, start_wait = time.perf_counter(), time.process_time(), run_queue_wait_ns()
        result = fn()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
        wait.append((run_queue_wait_ns() - start_wait) / 1e6)
    stats = {
        "wall_ms": statistics.median(wall),
        "wall_ms_max": max(wall),
        "cpu_ms": statistics.median(cpu),
        "run_queue_wait_ms": statistics.median(wait),
    }
    stats["blocked_ms"] = max(0.0, stats["wall_ms"] - stats["cpu_ms"] - stats["run_queue_wait_ms"])
    return stats, result


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="repetitions per format")
    parser.add_argument(
        "--contend", type=int, default=0, help="busy processes at nice 0 to run alongside (reproduces a busy box)"
    )
    parser.add_argument("--nice", type=int, default=0, help="raise this process's niceness by this much first")
    parser.add_argument("--out", default="c2pa_signing", help="result name under benchmarks/results/")
    args = parser.parse_args()
    import sklearn

    photo = Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg").convert("RGB")
    photo = photo.resize((1024, 1024), Image.Resampling.LANCZOS)
    spinners = [multiprocessing.Process(target=_spin, args=(120.0,), daemon=True) for _ in range(args.contend)]
    for p in spinners:
        p.start()
    if args.nice:
        os.nice(args.nice)
    results = {}
    try:
        with tempfile.TemporaryDirectory() as tmp:
            keys = create_dev_keys(Path(tmp) / "keys")
            for fmt in ("png", "jpeg", "webp"):
                buf = io.BytesIO()
                photo.save(buf, fmt.upper(), **({} if fmt == "png" else {"quality": 90}))
                data = buf.getvalue()

                def sign(data=data, fmt=fmt):
                    return sign_image(
                        data,
                        fmt,
                        title=f"bench.{fmt}",
                        model="incasa-image-tiny",
                        model_version="0.1",
                        parameters={"prompt": "a temple by a lake", "steps": 20, "seed": 0},
                        keys_dir=keys,
                    )

                sign()  # warm-up: loads the native library
                sign_stats, signed = timed(sign, args.n)
                check_stats, _ = timed(lambda data=data, fmt=fmt: check_image_bytes(data, fmt), args.n)
                verify_stats, report = timed(lambda signed=signed, fmt=fmt: verify(signed, fmt), args.n)
                strip_stats, stripped = timed(lambda signed=signed, fmt=fmt: strip(signed, fmt), args.n)
                assert report["state"] == "valid" and verify(stripped, fmt)["state"] == "absent" and stripped == data
                results[fmt] = {
                    "bytes": len(data),
                    "manifest_bytes": len(signed) - len(data),
                    "sign": sign_stats,
                    "check_ms": check_stats["cpu_ms"],  # the decode check inside sign_image (and strip, twice)
                    "verify": verify_stats,
                    "strip": strip_stats,
                    "trust": report["trust"],
                }
    finally:
        for p in spinners:
            p.terminate()
            p.join()

    table = Table(title=f"C2PA on a 1024 x 1024 photo (n={args.n} per format; milliseconds, medians)")
    columns = ("format", "file", "sign wall", "= CPU", "+ run-queue wait", "+ blocked", "of it decode check")
    for column in (*columns, "verify wall", "strip wall", "trust"):
        table.add_column(column, justify="right")
    for fmt, r in results.items():
        s = r["sign"]
        table.add_row(
            fmt,
            f"{r['bytes'] / 1024:.0f} KiB",
            f"{s['wall_ms']:.1f}",
            f"{s['cpu_ms']:.1f}",
            f"{s['run_queue_wait_ms']:.1f}",
            f"{s['blocked_ms']:.1f}",
            f"{r['check_ms']:.1f}",
            f"{r['verify']['wall_ms']:.1f}",
            f"{r['strip']['wall_ms']:.1f}",
            r["trust"],
        )
    console = Console(width=160)
    console.print(table)
    load = os.getloadavg()
    console.print(f"load average {load[0]:.2f}, niceness {os.nice(0)}, contending processes {args.contend}")
    payload = {
        "goal": "sign <= 150 ms per 1024^2 image",
        "load_average_1min": load[0],
        "niceness": os.nice(0),
        "contending_processes": args.contend,
        "results": results,
    }
    path = write_result(args.out, payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
