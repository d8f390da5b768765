"""Goal (issue 9, interop): the ONNX export of the default model matches PyTorch (PSNR >= 40 dB for a fixed seed), and
its CPU speed is reported against PyTorch.

Exports the checkpoint with `export_onnx` (or uses --onnx-dir), then measures on the CPU with the same thread count
for both runtimes (--threads, default 1: this machine's two cores are shared):
  * the network alone: one DiT call at the sampler's batch (2 n with classifier-free guidance), median of --repeats;
  * the whole `generate_images` (text encoder + 25 Euler steps), torch vs --backend onnx, median of --repeats;
  * parity: PSNR and max |difference| of the 8-bit images of both backends for the same seeds.
Usage: python benchmarks/image_onnx.py [--n 5] [--steps 25] [--repeats 3] [--threads 1] [--onnx-dir DIR]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402

GOAL_PSNR_DB = 40.0


def _median_time(fn, repeats: int) -> float:
    fn()  # warm-up: first calls allocate and (in ONNX Runtime) plan memory
    walls = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        walls.append(time.perf_counter() - t0)
    return statistics.median(walls)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--onnx-dir", default=None, help="An existing `incasa export onnx` folder (default: export now).")
    ap.add_argument("--prompt", default="a red apple, noto style")
    ap.add_argument("--n", type=int, default=5)
    ap.add_argument("--steps", type=int, default=25)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()

    import numpy as np
    import torch

    torch.set_num_threads(args.threads)
    from incasa.image import onnx_backend
    from incasa.image.generate import generate_images, load_pipeline

    pipe = load_pipeline(args.checkpoint, device="cpu")
    tmp = None
    export_s = None
    onnx_dir = args.onnx_dir
    if onnx_dir is None:
        tmp = tempfile.TemporaryDirectory()
        t0 = time.perf_counter()
        onnx_dir = onnx_backend.export_onnx(args.checkpoint, Path(tmp.name) / "onnx")
        export_s = time.perf_counter() - t0
    dit_onnx = onnx_backend.load_onnx_dit(onnx_dir)  # the session generate_images uses: torch's thread count

    # the network alone, at the sampler's batch: [uncond; cond] x n
    B = 2 * args.n
    text = pipe.encoder.encode([args.prompt] * args.n + [""] * args.n)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, pipe.model.cfg.in_channels, *pipe.size, generator=g)
    t = torch.full((B,), 0.5)
    call = (x, t, text["tokens"], text["mask"], text["pooled"])
    with torch.no_grad():
        net_torch = _median_time(lambda: pipe.model(*call), args.repeats * 5)
        net_onnx = _median_time(lambda: dit_onnx(*call), args.repeats * 5)
        net_diff = float((pipe.model(*call) - dit_onnx(*call)).abs().max())

    kw = dict(n=args.n, seed=7, steps=args.steps, guidance=4.0, pipeline=pipe)
    gen_torch = _median_time(lambda: generate_images(args.prompt, **kw), args.repeats)
    gen_onnx = _median_time(lambda: generate_images(args.prompt, backend="onnx", onnx_dir=onnx_dir, **kw), args.repeats)
    a = np.stack([np.asarray(im, dtype=np.float64) for im in generate_images(args.prompt, **kw)])
    b = np.stack([np.asarray(im, dtype=np.float64)
                  for im in generate_images(args.prompt, backend="onnx", onnx_dir=onnx_dir, **kw)])
    mse = float(((a - b) ** 2).mean())
    psnr = float("inf") if mse == 0 else 10 * float(np.log10(255.0**2 / mse))
    max_px = int(np.abs(a - b).max())

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"ONNX Runtime vs PyTorch on CPU ({args.threads} thread(s)), {pipe.name}, "
                        f"{pipe.size[0]}x{pipe.size[1]}, n={args.n}, {args.steps} steps")
    for col in ("measure", "PyTorch", "ONNX Runtime", "speed-up"):
        table.add_column(col)
    table.add_row(f"DiT call, batch {B} (ms)", f"{net_torch * 1e3:.1f}", f"{net_onnx * 1e3:.1f}",
                  f"{net_torch / net_onnx:.2f}x")
    table.add_row(f"generate_images n={args.n} (s)", f"{gen_torch:.2f}", f"{gen_onnx:.2f}", f"{gen_torch / gen_onnx:.2f}x")
    table.add_row("parity: PSNR (dB) / max |pixel diff|", "", f"{psnr:.1f} / {max_px}", f"goal >= {GOAL_PSNR_DB}")
    table.add_row("parity: max |x0 diff| of one call", "", f"{net_diff:.2e}", "")
    if export_s is not None:
        table.add_row("export time (s)", "", f"{export_s:.1f}", "")
    Console().print(table)
    path = write_result("image_onnx", {
        "model": pipe.name, "model_hash": pipe.weights_hash, "threads": args.threads, "n": args.n,
        "steps": args.steps, "repeats": args.repeats, "dit_batch": B, "dit_call_torch_s": net_torch,
        "dit_call_onnx_s": net_onnx, "dit_speedup": net_torch / net_onnx, "generate_torch_s": gen_torch,
        "generate_onnx_s": gen_onnx, "generate_speedup": gen_torch / gen_onnx, "psnr_db": psnr,
        "max_pixel_diff": max_px, "max_x0_diff": net_diff, "goal_psnr_db": GOAL_PSNR_DB,
        "psnr_ok": psnr >= GOAL_PSNR_DB, "export_s": export_s})
    print(f"wrote {path}")
    if tmp is not None:
        tmp.cleanup()


if __name__ == "__main__":
    main()
