"""Benchmark C2PA content credentials: time to sign, verify and strip a 1024 x 1024 image (PNG, JPEG, WebP).

    python benchmarks/c2pa_signing.py [--n 10]     # ~15 s on 2 CPU cores

Goal (issue 7): signing <= 150 ms per 1024^2 image. The image is a photograph (scikit-learn's china.jpg,
CC-BY 2.0) resized to 1024 x 1024 and encoded once per format; signing uses a fresh development chain in a
temporary folder (ES256, no timestamp authority, no thumbnail), i.e. exactly what `incasa generate` does.
Times include the input checks (full decode of the image to catch truncation) and c2pa-rs hashing the file.
Writes benchmarks/results/c2pa_signing.json (device, date, commit).
"""

from __future__ import annotations

import argparse
import io
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

from incasa.safety.provenance import create_dev_keys, sign_image, strip, verify

RESULTS = Path(__file__).parent / "results" / "c2pa_signing.json"


def timed(fn, n: int) -> tuple[list[float], list[float], object]:
    """Wall-clock and process CPU milliseconds of n calls (CPU time is robust to a busy machine)."""
    wall, cpu, result = [], [], None
    for _ in range(n):
        start, start_cpu = time.perf_counter(), time.process_time()
        result = fn()
        wall.append((time.perf_counter() - start) * 1000)
        cpu.append((time.process_time() - start_cpu) * 1000)
    return wall, cpu, result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10, help="repetitions per format")
    args = parser.parse_args()
    import sklearn

    photo = Image.open(Path(sklearn.__file__).parent / "datasets" / "images" / "china.jpg").convert("RGB")
    photo = photo.resize((1024, 1024), Image.Resampling.LANCZOS)
    results = {}
    with tempfile.TemporaryDirectory() as tmp:
        keys = create_dev_keys(Path(tmp) / "keys")
        for fmt in ("png", "jpeg", "webp"):
            buf = io.BytesIO()
            photo.save(buf, fmt.upper(), **({} if fmt == "png" else {"quality": 90}))
            data = buf.getvalue()

            def sign():
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
            sign_ms, sign_cpu_ms, signed = timed(sign, args.n)
            verify_ms, _, report = timed(lambda: verify(signed, fmt), args.n)
            strip_ms, _, stripped = timed(lambda: strip(signed, fmt), args.n)
            assert report["state"] == "valid" and verify(stripped, fmt)["state"] == "absent" and stripped == data
            results[fmt] = {
                "bytes": len(data),
                "manifest_bytes": len(signed) - len(data),
                "sign_ms_median": statistics.median(sign_ms),
                "sign_ms_max": max(sign_ms),
                "sign_cpu_ms_median": statistics.median(sign_cpu_ms),
                "verify_ms_median": statistics.median(verify_ms),
                "strip_ms_median": statistics.median(strip_ms),
                "trust": report["trust"],
            }

    table = Table(title=f"C2PA on a 1024 x 1024 photo (n={args.n} per format)")
    for column in ("format", "file", "manifest", "sign median / max", "sign CPU", "verify", "strip", "trust"):
        table.add_column(column, justify="right")
    for fmt, r in results.items():
        table.add_row(
            fmt,
            f"{r['bytes'] / 1024:.0f} KiB",
            f"{r['manifest_bytes'] / 1024:.1f} KiB",
            f"{r['sign_ms_median']:.0f} / {r['sign_ms_max']:.0f} ms",
            f"{r['sign_cpu_ms_median']:.0f} ms",
            f"{r['verify_ms_median']:.0f} ms",
            f"{r['strip_ms_median']:.0f} ms",
            r["trust"],
        )
    Console().print(table)

    payload = {
        "results": results,
    }
    path = write_result("c2pa_signing", payload)
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
