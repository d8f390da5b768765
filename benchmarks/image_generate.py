"""Goal (foundation issue): five 64x64 variants in under 10 s on a 2-core CPU, model load included.

Runs the real command, `incasa generate PROMPT -n 5`, as a new process each time (so import, weight load and text
encoder start-up count), and reports the median over --repeats; then the same work in-process, split into load
and sampling. Usage: python benchmarks/image_generate.py [--repeats 3] [--checkpoint PATH]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

GOAL_S = 10.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--prompt", default="a red apple, noto style")
    args = ap.parse_args()
    incasa = str(Path(sys.executable).parent / "incasa")
    extra = ["-c", args.checkpoint] if args.checkpoint else []
    walls = []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory() as out:
            t0 = time.perf_counter()
            subprocess.run([incasa, "generate", args.prompt, "-n", "5", "--seed", "7", "-o", out, *extra],
                           check=True, capture_output=True)
            walls.append(time.perf_counter() - t0)

    from incasa.image.generate import generate_images, load_pipeline

    t0 = time.perf_counter()
    pipe = load_pipeline(args.checkpoint)
    t_load = time.perf_counter() - t0
    t0 = time.perf_counter()
    generate_images(args.prompt, n=5, seed=7, pipeline=pipe)
    t_sample = time.perf_counter() - t0

    from rich.console import Console
    from rich.table import Table

    table = Table(title="incasa generate -n 5 (64x64, 25 steps, CFG)")
    for col in ("measure", "seconds", "goal"):
        table.add_column(col)
    table.add_row("CLI, new process (median)", f"{statistics.median(walls):.2f}", f"< {GOAL_S}")
    table.add_row("  in-process: load weights + text encoder", f"{t_load:.2f}", "")
    table.add_row("  in-process: sample 5 variants", f"{t_sample:.2f}", "")
    Console().print(table)
    path = write_result("image_generate", {"prompt": args.prompt, "cli_wall_s": walls,
                                           "cli_wall_median_s": statistics.median(walls), "load_s": t_load,
                                           "sample_s": t_sample, "goal_s": GOAL_S,
                                           "ratio_to_goal": statistics.median(walls) / GOAL_S})
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
