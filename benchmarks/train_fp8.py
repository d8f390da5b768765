"""Training step at the seed's width: torchao FP8 (tensorwise, rowwise) against compiled bf16, in one run (GPU only).

Issue 9's goal: FP8 >= 1.3x faster than compiled bf16 per training step at width 3072, with matching loss curves.
The model is incasa's own image DiT at the `8b` width (3072, 24 heads of 128, 16 latent channels, patch 2, text
width 4096) but only --double/--single blocks deep (default 2 + 4, ~1.3B parameters, as GPU.md's probe), built
with incasa.image.dit and treated from outside by incasa.train.parallelize, exactly as a training run would be:

    bf16         regional torch.compile of the blocks, bf16 autocast over fp32 master weights
    tensorwise   apply_float8(recipe="tensorwise") (token-wise linears of the blocks only; adaLN modulation,
                 embeddings and the final layer stay bf16), then the same regional compile
    rowwise      the same with one scale per row

Part 1, speed: batch --batch of (--image-tokens + --text-tokens) tokens (default 4 x (4096 + 512), i.e. 1024^2
images), rectified-flow loss (incasa.image.flow.rf_loss); forward+backward and the fused AdamW step timed apart
with CUDA events after warm-up (compile included in warm-up, reported). Ratio = bf16 ms / fp8 ms (fwd+bwd).
Part 2, a short real run: --curve-steps AdamW steps of every arm from the same initial weights on the same batches
of a procedural, learnable data set (a fixed smooth latent per "prompt", prompts as fixed random text features),
at a smaller --curve-image-tokens so it stays short; losses overlaid in a PNG.

Text mask: none by default (every text token real, as FLUX trains: padding tokens are attended), so SDPA runs its
flash kernels; --text-mask passes an all-true [B, L] mask instead, which is what incasa's trainer passes for a padded
batch to a model with DiTConfig.text_len = 0 (the small presets) and which forces the slower memory-efficient kernel
(stop 18's 305 ms bf16 step at the defaults was measured that way). The 1b and 8b presets have text_len = 512: they
attend to 512 zero-padded text tokens with no mask, which is this default at --text-tokens 512. --profile writes each
arm's kernel table (one step) beside the JSON.

--sdpa picks the attention kernel for the whole run: flash (default), efficient, or cudnn. GPU.md: cuDNN failed in
backward at 4 x 4,608 tokens, surfacing later as an unrelated-looking CUBLAS error (in stop 22, without a mask, it
ran, and was the fastest: 1.22x), so it is opt-in and best run in a process of its own; FP8 needs torchao and
compute capability 8.9+, and an arm that fails is reported with its error while the others still run; results are
written after each part. On a machine without CUDA it prints why and exits 0. Without matplotlib (a bare GPU image),
re-plot later from the JSON:

    python benchmarks/train_fp8.py                      # on the GPU: both parts, JSON + PNG in benchmarks/results/
    python benchmarks/train_fp8.py --no-speed --name train_fp8_curves   # only part 2 (a device call too short for both)
    python benchmarks/train_fp8.py --plot benchmarks/results/train_fp8.json   # anywhere: only the PNG
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
import traceback
from dataclasses import replace
from pathlib import Path

import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import RESULTS, write_result  # noqa: E402

from incasa.image.dit import PRESETS, DiT, DoubleStreamBlock, SingleStreamBlock  # noqa: E402
from incasa.image.flow import rf_loss  # noqa: E402
from incasa.train.parallelize import apply_float8, apply_regional_compile  # noqa: E402

BLOCKS = (DoubleStreamBlock, SingleStreamBlock)
SDPA_BACKENDS = {"flash": SDPBackend.FLASH_ATTENTION, "efficient": SDPBackend.EFFICIENT_ATTENTION,
                 "cudnn": SDPBackend.CUDNN_ATTENTION}
ARMS = ("bf16", "tensorwise", "rowwise")


def build(args, arm: str) -> DiT:
    # text_len 0: the benchmark's text tokens are all real, and --text-mask must reach SDPA as a mask (the 8b preset's
    # text_len = 512 would zero-pad and drop it); without --text-mask at 512 tokens this is the preset's own path
    cfg = replace(PRESETS["8b"], num_double=args.double, num_single=args.single, text_len=0)
    torch.manual_seed(0)  # the same initial weights for every arm (the model's own adaLN-Zero init)
    with torch.device("cuda"):
        model = DiT(cfg)
    if arm != "bf16":
        apply_float8(model, recipe=arm)
    return apply_regional_compile(model, BLOCKS, **({"mode": args.compile_mode} if args.compile_mode else {}))


def side(num_tokens: int, patch: int) -> int:
    s = math.isqrt(num_tokens)
    if s * s != num_tokens:
        raise SystemExit(f"--image-tokens must be a square number (got {num_tokens})")
    return s * patch  # latent height = width


def synthetic_batch(batch: int, image_tokens: int, text_tokens: int, gen: torch.Generator, text_mask: bool):
    cfg = PRESETS["8b"]
    H = side(image_tokens, cfg.patch_size)
    x0 = torch.randn(batch, cfg.in_channels, H, H, device="cuda", generator=gen)
    cond = {"tokens": torch.randn(batch, text_tokens, cfg.text_dim, device="cuda", generator=gen),
            "mask": torch.ones(batch, text_tokens, dtype=torch.bool, device="cuda") if text_mask else None,
            "pooled": torch.randn(batch, cfg.text_dim, device="cuda", generator=gen)}
    return x0, cond


def step_fn(model, x0, cond, num_tokens, gen):
    with torch.autocast("cuda", dtype=torch.bfloat16):
        loss = rf_loss(model, x0, cond, num_tokens, generator=gen)
    loss.backward()
    return loss


def speed(args, arm: str) -> dict:
    model = build(args, arm)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    gen = torch.Generator("cuda").manual_seed(0)
    x0, cond = synthetic_batch(args.batch, args.image_tokens, args.text_tokens, gen, args.text_mask)
    torch.cuda.reset_peak_memory_stats()
    t0 = time.time()
    for _ in range(args.warmup):
        step_fn(model, x0, cond, args.image_tokens, gen)
        opt.step()
        opt.zero_grad(set_to_none=True)
    torch.cuda.synchronize()
    warmup_s = time.time() - t0
    ev = [(torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True),
           torch.cuda.Event(enable_timing=True)) for _ in range(args.steps)]
    for a, b, c in ev:
        a.record()
        step_fn(model, x0, cond, args.image_tokens, gen)
        b.record()
        opt.step()
        opt.zero_grad(set_to_none=True)
        c.record()
    torch.cuda.synchronize()
    fb = sorted(a.elapsed_time(b) for a, b, _ in ev)
    if args.profile:  # where one step's time goes, by kernel
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            step_fn(model, x0, cond, args.image_tokens, gen)
            torch.cuda.synchronize()
        table_txt = prof.key_averages().table(sort_by="cuda_time_total", row_limit=30, max_name_column_width=90)
        (RESULTS / f"{args.name}_profile_{arm}.txt").write_text(table_txt)
        opt.zero_grad(set_to_none=True)
    op = sorted(b.elapsed_time(c) for _, b, c in ev)
    n_params = sum(p.numel() for p in model.parameters())
    n_fp8 = sum(type(m).__name__ == "Float8Linear" for m in model.modules())
    out = {"arm": arm, "fwd_bwd_ms": fb[len(fb) // 2], "optimizer_ms": op[len(op) // 2],
           "step_ms": fb[len(fb) // 2] + op[len(op) // 2], "warmup_s": warmup_s,
           "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9, "params": n_params, "float8_linears": n_fp8}
    del model, opt
    return out


def curve_data(args, num_prompts: int = 32):
    """Procedural data: prompt i -> a fixed smooth latent (low-frequency noise upsampled), fixed text features."""
    cfg = PRESETS["8b"]
    H = side(args.curve_image_tokens, cfg.patch_size)
    g = torch.Generator("cuda").manual_seed(123)
    coarse = torch.randn(num_prompts, cfg.in_channels, 4, 4, device="cuda", generator=g)
    latents = torch.nn.functional.interpolate(coarse, size=(H, H), mode="bicubic", align_corners=False)
    tokens = torch.randn(num_prompts, args.curve_text_tokens, cfg.text_dim, device="cuda", generator=g)
    return latents, tokens


def curve(args, arm: str, data) -> list[float]:
    latents, tokens = data
    model = build(args, arm)
    opt = torch.optim.AdamW(model.parameters(), lr=args.curve_lr, fused=True)
    gen = torch.Generator("cuda").manual_seed(7)  # same batches and noise for every arm
    losses = []
    for step in range(args.curve_steps):
        idx = torch.randint(0, latents.shape[0], (args.curve_batch,), device="cuda", generator=gen)
        mask = torch.ones(idx.shape[0], tokens.shape[1], dtype=torch.bool, device="cuda") if args.text_mask else None
        cond = {"tokens": tokens[idx], "mask": mask, "pooled": tokens[idx].mean(1)}
        loss = step_fn(model, latents[idx], cond, args.curve_image_tokens, gen)
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())
        if step % 50 == 0:
            print(f"  {arm} step {step} loss {loss.item():.4f}", flush=True)
    del model, opt
    return [float(x) for x in torch.stack(losses).cpu()]


def plot(result: dict, png: Path) -> Path | None:
    try:
        import matplotlib
    except ImportError:
        print("matplotlib is absent: re-plot later with --plot", RESULTS / "train_fp8.json")
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for arm, losses in result["curves"].items():
        k = max(1, len(losses) // 50)  # a running mean makes the arms comparable through rf_loss's noise
        smooth = [sum(losses[max(0, i - k + 1):i + 1]) / len(losses[max(0, i - k + 1):i + 1])
                  for i in range(len(losses))]
        ax.plot(smooth, label=f"{arm} (final {sum(losses[-k:]) / k:.4f})")
    ax.set_yscale("log")  # rf_loss has rare large values (the 1/t^2 weight near clean data)
    ax.set_xlabel("step")
    ax.set_ylabel(f"rf loss (running mean of {k})")
    ax.set_title(f"width 3072 DiT, {result.get('device', '?')}: bf16 vs torchao float8")
    ax.legend()
    fig.tight_layout()
    tmp = png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=120)
    plt.close(fig)
    tmp.replace(png)
    return png


def table(rows: list[dict]) -> None:
    from rich.console import Console
    from rich.table import Table

    t = Table(title="training step at width 3072 (median ms)")
    for c in ("arm", "fwd+bwd ms", "AdamW ms", "speed-up (fwd+bwd)", "peak GB", "FP8 linears", "warm-up s"):
        t.add_column(c)
    base = next((r for r in rows if r["arm"] == "bf16" and "error" not in r), None)
    for r in rows:
        if "error" in r:
            t.add_row(r["arm"], "failed", "", "", "", "", "")
            continue
        ratio = f"{base['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}x" if base else "-"
        t.add_row(r["arm"], f"{r['fwd_bwd_ms']:.1f}", f"{r['optimizer_ms']:.1f}", ratio,
                  f"{r['peak_memory_gb']:.1f}", str(r["float8_linears"]), f"{r['warmup_s']:.0f}")
    Console().print(t)
    for r in rows:
        if "error" in r:
            print(f"{r['arm']} failed: {r['error']}")


def run_arm(fn, arm: str, *a):
    try:
        return fn(*a)
    except Exception as e:  # one arm's failure (no torchao, old GPU, a kernel error) must not lose the others
        traceback.print_exc()
        return {"arm": arm, "error": f"{type(e).__name__}: {e}"}
    finally:
        torch._dynamo.reset()
        torch.cuda.empty_cache()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arms", default=",".join(ARMS), help="comma-separated subset of " + ",".join(ARMS))
    ap.add_argument("--double", type=int, default=2)
    ap.add_argument("--single", type=int, default=4)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--image-tokens", type=int, default=4096, help="a square: 4096 = a 1024^2 image")
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode (default: the default mode)")
    ap.add_argument("--text-mask", action="store_true",
                    help="pass an all-true text mask (memory-efficient SDPA) instead of none (flash SDPA)")
    ap.add_argument("--profile", action="store_true", help="write each arm's kernel table (one step) beside the JSON")
    ap.add_argument("--sdpa", default="flash", choices=sorted(SDPA_BACKENDS), help="attention kernel (see above)")
    ap.add_argument("--no-speed", dest="speed", action="store_false", help="skip part 1 (only the loss curves)")
    ap.add_argument("--curve-steps", type=int, default=200, help="0 skips part 2")
    ap.add_argument("--curve-batch", type=int, default=8)
    ap.add_argument("--curve-image-tokens", type=int, default=1024, help="a square: 1024 = a 512^2 image")
    ap.add_argument("--curve-text-tokens", type=int, default=64)
    ap.add_argument("--curve-lr", type=float, default=1e-4)
    ap.add_argument("--name", default="train_fp8")
    ap.add_argument("--plot", type=Path, default=None, help="only re-plot the PNG from this result JSON")
    args = ap.parse_args()
    if args.plot is not None:
        print("wrote", plot(json.loads(args.plot.read_text()), args.plot.with_suffix(".png")))
        return
    if not torch.cuda.is_available():
        print("train_fp8: needs a CUDA GPU (FP8 training needs compute capability 8.9+); nothing measured here.")
        return
    arms = [a for a in args.arms.split(",") if a]
    if unknown := set(arms) - set(ARMS):
        raise SystemExit(f"unknown arms {sorted(unknown)}; choose from {', '.join(ARMS)}")
    if args.text_mask and args.sdpa == "flash":
        raise SystemExit("--text-mask needs --sdpa efficient or cudnn (the flash kernels take no mask)")
    torch.backends.cuda.matmul.allow_tf32 = True
    with sdpa_kernel([SDPA_BACKENDS[args.sdpa]]):  # only this kernel: an error, never a silent fallback to math
        run(args, arms)


def run(args, arms: list[str]) -> None:
    result = {"settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
              "capability": list(torch.cuda.get_device_capability()), "speed": [], "curves": {}}
    for arm in arms if args.speed else []:
        print(f"speed: {arm}", flush=True)
        result["speed"].append(run_arm(speed, arm, args, arm))
        write_result(args.name, result)
    base = next((r for r in result["speed"] if r["arm"] == "bf16" and "error" not in r), None)
    if base:
        result["speedup_fwd_bwd"] = {r["arm"]: base["fwd_bwd_ms"] / r["fwd_bwd_ms"]
                                     for r in result["speed"] if "error" not in r}
    table(result["speed"])
    if args.curve_steps > 0:
        data = curve_data(args)
        for arm in arms:
            if any(r["arm"] == arm and "error" in r for r in result["speed"]):
                continue
            print(f"curve: {arm}", flush=True)
            out = run_arm(curve, arm, args, arm, data)
            if isinstance(out, dict):
                result.setdefault("curve_errors", {})[arm] = out["error"]
            else:
                result["curves"][arm] = out
            write_result(args.name, result)  # a call cut short still keeps the arms it finished
        if "bf16" in result["curves"]:
            ref = result["curves"]["bf16"]
            k = max(1, len(ref) // 10)
            result["curve_final_mean"] = {a: sum(c[-k:]) / k for a, c in result["curves"].items()}
            print("mean loss over the last", k, "steps:", result["curve_final_mean"])
    path = write_result(args.name, result)
    print("wrote", path)
    if result["curves"]:
        print("wrote", plot({**result, "device": torch.cuda.get_device_name(0)}, path.with_suffix(".png")))


if __name__ == "__main__":
    main()
