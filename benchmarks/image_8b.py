"""Five 1024^2 variants of the `8b` preset, 28 steps, under a 12 GiB cap, against diffusers' FLUX in the same run (GPU).

Issue 9's goal: <= 7.5 s and <= 12 GB peak on an H100, >= 1.2x faster than diffusers' FluxTransformer2DModel at the
same width and depth under the same FP8 + compile treatment; with a distilled few-step sampler, <= 1.5 s.

Both arms do the same work per step: batch 5 x (4,096 image tokens (128x128 latents, patch 2) + --text-tokens text
tokens), 12 double + 28 single blocks at width 3072, random weights, one network evaluation per step (no
classifier-free guidance: FLUX-dev is guidance-distilled, and incasa's distilled sampler bakes guidance in too; an
undistilled model with CFG doubles the work). Transformer only, Euler updates included; the autoencoder decode
(incasa's f8c16 preset, random weights) is timed apart.

    incasa      incasa.image.scale: built on meta, loaded piece by piece with FP8 (PerRow) weights on every linear
                but the two that touch pixels, under cap_memory(--cap-gib); regional compile; the fastest SDPA
                kernel; text mask None
    flux        diffusers FluxTransformer2DModel (12 + 28 layers, 24 heads of 128, joint_attention_dim 4096), built
                in bf16 on the GPU, torchao quantize_ with the same FP8 config on all its linears (the setting
                GPU.md measured at 9.0 s on an H100), regional compile of its blocks
    flux-fused  the same after diffusers' fuse_qkv_projections() (one QKV GEMM per stream, as incasa's blocks)

The seconds are wall time around the whole 28-step loop after a compile warm-up, median of --repeats runs.
Peak memory is torch.cuda.max_memory_allocated over the sampling runs (and, for incasa, over loading as well).

    python benchmarks/image_8b.py [--arms incasa,flux,flux-fused] [--steps 28] [--few-steps 4]

Compile warm-up takes minutes per arm (on an H200: 275 s for FLUX, 334 s for incasa with FP8 weights), mostly on
the CPU. --gate lets one process per arm share the GPU: each loads and compiles while the others do, then they wait
for each other and time their runs strictly one after another (turn K of N), so no timed run shares the GPU; --merge
gathers per-arm results into one JSON with the ratios. Tried once with both arms: two FP8 compiles at once on 16
cores did not finish within 400 s. What worked was one arm against a 2-way gate whose other turn was a shell loop
that paused a training job (SIGSTOP) before saying ready, and resumed it after (scripts/device_8b_beside_text.sh, the
call that produced benchmarks/results/image_8b.json's incasa row and the shipped text default).

    python benchmarks/image_8b.py --arms incasa --gate /tmp/g --turn 0 --of 2 --name image_8b_incasa &
    python benchmarks/image_8b.py --arms flux --gate /tmp/g --turn 1 --of 2 --name image_8b_flux; wait
    python benchmarks/image_8b.py --merge image_8b_incasa,image_8b_flux --name image_8b
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import write_result  # noqa: E402

GIB = 2**30


def _table(rows: list[dict]) -> None:
    cols = ("arm", "five_variants_s", "per_step_ms", "few_step_s", "peak_gib", "load_peak_gib", "compile_s", "sdpa")
    print(" | ".join(cols))
    for r in rows:
        print(" | ".join(f"{r.get(c):.3f}" if isinstance(r.get(c), float) else str(r.get(c, "")) for c in cols))


def _wait_turn(args) -> None:
    """With --gate: wait until every process has warmed up and every earlier turn is done. The caller marks its own
    turn done (_done) when its timed work is over; main() marks it done after a failure too, so none waits forever."""
    if not args.gate:
        return
    gate = Path(args.gate)
    gate.mkdir(parents=True, exist_ok=True)
    (gate / f"ready.{args.turn}").touch()
    deadline = time.monotonic() + args.gate_timeout
    while not all((gate / f"ready.{k}").exists() or (gate / f"done.{k}").exists() for k in range(args.of)) or \
            not all((gate / f"done.{k}").exists() for k in range(args.turn)):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {args.gate_timeout:.0f} s for the other arms at {gate}")
        time.sleep(0.5)


def _done(args) -> None:
    if args.gate:  # also after a failure before _wait_turn made the folder
        Path(args.gate).mkdir(parents=True, exist_ok=True)
        (Path(args.gate) / f"done.{args.turn}").touch()


def _merge(names: list[str], name: str, note: str | None = None) -> None:
    """One JSON from per-arm JSONs (a gated run, or arms measured one after another on the same machine), with the
    ratios: the device, commit and settings of the first part; every row keeps the date its part was measured."""
    from common import RESULTS

    parts = [json.loads((RESULTS / f"{n}.json").read_text()) for n in names]
    devices = {p["device"] for p in parts}
    if len(devices) > 1:
        raise SystemExit(f"refusing to merge results from different devices: {sorted(devices)}")
    rows = [{**r, "measured": p["date"]} for p in parts for r in p["rows"]]
    env = {k: parts[0][k] for k in ("device", "date", "commit", "torch", "python")}
    settings = {**parts[0]["settings"], "arms": ",".join(p["settings"]["arms"] for p in parts), "merged_from": names}
    ratios = _ratios(rows)
    path = write_result(name, {"settings": settings, "rows": rows, "ratios": ratios,
                               **({"note": note} if note else {})}, env=env)
    _report(rows, ratios, path)


def _report(rows: list[dict], ratios: dict, path: Path) -> None:
    _table(rows)
    print("ratios (>1: incasa faster):", {k: round(v, 3) for k, v in ratios.items()})
    print("wrote", path)


def _ratios(rows: list[dict]) -> dict:
    by = {r["arm"]: r for r in rows if "five_variants_s" in r}
    ratios = {}
    if "incasa" in by:
        for ref in ("flux", "flux-fused"):
            if ref in by:
                ratios[f"{ref}_over_incasa"] = by[ref]["five_variants_s"] / by["incasa"]["five_variants_s"]
                if by[ref].get("few_step_s") and by["incasa"].get("few_step_s"):
                    ratios[f"{ref}_over_incasa_few_step"] = by[ref]["few_step_s"] / by["incasa"]["few_step_s"]
    return ratios


def _sample_loop(step_fn, x, steps: int):
    """Euler from t=1 to 0 on a uniform grid (the schedule does not change the cost)."""
    ts = torch.linspace(1.0, 0.0, steps + 1).tolist()
    for i in range(steps):
        x = x + (ts[i + 1] - ts[i]) * step_fn(x, ts[i])
    return x


def _time_runs(step_fn, x0, steps: int, repeats: int) -> list[float]:
    from incasa.image.scale import timed

    return [timed(lambda: _sample_loop(step_fn, x0, steps))[1] for _ in range(repeats)]


def run_incasa(args) -> dict:
    from torch.nn.attention import sdpa_kernel

    from incasa.image.dit import PRESETS
    from incasa.image.flow import velocity
    from incasa.image.scale import cap_memory, compile_blocks, fastest_sdpa_backend, load_dit, timed

    cfg = PRESETS["8b"]
    B, S = args.variants, args.text_tokens
    lat = args.size // 8
    N = (lat // cfg.patch_size) ** 2
    torch.cuda.reset_peak_memory_stats()
    if args.cap_gib:
        cap_memory(args.cap_gib)
    model, load_s = timed(lambda: load_dit(cfg, weights=None, fp8=args.fp8))
    load_peak = torch.cuda.max_memory_allocated() / GIB
    backend, sdpa_ms = fastest_sdpa_backend(B, cfg.num_heads, S + N, cfg.width // cfg.num_heads)
    g = torch.Generator(device="cuda").manual_seed(0)
    tokens = torch.randn(B, S, cfg.text_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    pooled = torch.randn(B, cfg.text_dim, device="cuda", dtype=torch.bfloat16, generator=g)
    x0 = torch.randn(B, cfg.in_channels, lat, lat, device="cuda", dtype=torch.bfloat16, generator=g)

    def step(x, t):
        return velocity(model, x, x.new_full((B,), t), tokens, None, pooled)

    ctx = sdpa_kernel([backend]) if backend is not None else torch.no_grad()
    with torch.inference_mode(), ctx:
        if args.compile:
            compile_blocks(model)
        _, compile_s = timed(lambda: _sample_loop(step, x0, 2))  # compile + first kernels
        _wait_turn(args)
        torch.cuda.reset_peak_memory_stats()
        runs = _time_runs(step, x0, args.steps, args.repeats)
        few = _time_runs(step, x0, args.few_steps, args.repeats) if args.few_steps else []
        out = _sample_loop(step, x0, 1)
    peak = torch.cuda.max_memory_allocated() / GIB
    finite = bool(torch.isfinite(out).all())
    del model
    gc.collect()
    torch.cuda.empty_cache()
    if args.cap_gib:
        torch.cuda.set_per_process_memory_fraction(1.0)
    decode = run_decode(args)  # still this process's turn: the 8b weights are freed, the decoder runs alone
    _done(args)
    median = statistics.median(runs)
    timed_ms = {n: t for n, t in sdpa_ms.items() if isinstance(t, float)}  # kernels that ran, by milliseconds
    row = {"arm": "incasa", "five_variants_s": median, "runs_s": runs, "per_step_ms": 1000 * median / args.steps,
           "few_step_s": statistics.median(few) if few else None, "few_steps": args.few_steps,
           "peak_gib": max(peak, load_peak), "sampling_peak_gib": peak, "load_peak_gib": load_peak,
           "load_s": load_s, "compile_s": compile_s, "sdpa": min(timed_ms, key=timed_ms.get, default=None),
           "sdpa_ms": sdpa_ms, "output_finite": finite, "cap_gib": args.cap_gib}
    return decode, row


def run_decode(args) -> dict:
    """incasa's f8c16 autoencoder (random weights) decoding the five latents, bf16, compiled decoder."""
    from incasa.image.autoencoder import AE_PRESETS, Autoencoder
    from incasa.image.scale import timed

    lat = args.size // 8
    with torch.device("cuda"):
        ae = Autoencoder(AE_PRESETS["f8c16"]).to(torch.bfloat16).eval()
    z = torch.randn(args.variants, 16, lat, lat, device="cuda", dtype=torch.bfloat16)
    with torch.inference_mode():
        timed(lambda: ae.decode(z))
        times = [timed(lambda: ae.decode(z))[1] for _ in range(args.repeats)]
    params = sum(p.numel() for p in ae.parameters())
    del ae
    torch.cuda.empty_cache()
    return {"arm": "decode f8c16", "five_variants_s": statistics.median(times), "params": params}


def run_flux(args, fused: bool) -> dict:
    from diffusers import FluxTransformer2DModel
    from torchao.quantization import quantize_

    from incasa.image.scale import fp8_config, timed

    B, S = args.variants, args.text_tokens
    lat = args.size // 8
    N = (lat // 2) ** 2  # FLUX packs 2x2 latent patches: 64 channels per token
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = FluxTransformer2DModel(patch_size=1, in_channels=64, num_layers=12, num_single_layers=28,
                                       attention_head_dim=128, num_attention_heads=24, joint_attention_dim=4096,
                                       pooled_projection_dim=768, guidance_embeds=True).to(torch.bfloat16).eval()
    params = sum(p.numel() for p in model.parameters())
    if fused:
        model.fuse_qkv_projections()  # diffusers' own optimisation: one QKV GEMM per stream, as incasa's blocks have
    if args.fp8:
        quantize_(model, fp8_config(args.fp8))  # every linear, as GPU.md's reference run
    gc.collect()
    torch.cuda.empty_cache()
    g = torch.Generator(device="cuda").manual_seed(0)
    txt = torch.randn(B, S, 4096, device="cuda", dtype=torch.bfloat16, generator=g)
    pooled = torch.randn(B, 768, device="cuda", dtype=torch.bfloat16, generator=g)
    x0 = torch.randn(B, N, 64, device="cuda", dtype=torch.bfloat16, generator=g)
    img_ids = torch.zeros(N, 3, device="cuda")
    img_ids[:, 1] = torch.arange(N, device="cuda") // (lat // 2)
    img_ids[:, 2] = torch.arange(N, device="cuda") % (lat // 2)
    txt_ids = torch.zeros(S, 3, device="cuda")
    guidance = torch.full((B,), 3.5, device="cuda")

    def step(x, t):
        return model(hidden_states=x, encoder_hidden_states=txt, pooled_projections=pooled,
                     timestep=x.new_full((B,), t), img_ids=img_ids, txt_ids=txt_ids, guidance=guidance,
                     return_dict=False)[0]

    with torch.inference_mode():
        if args.compile:
            for block in list(model.transformer_blocks) + list(model.single_transformer_blocks):
                block.compile()
        _, compile_s = timed(lambda: _sample_loop(step, x0, 2))
        _wait_turn(args)
        torch.cuda.reset_peak_memory_stats()
        runs = _time_runs(step, x0, args.steps, args.repeats)
        few = _time_runs(step, x0, args.few_steps, args.repeats) if args.few_steps else []
    peak = torch.cuda.max_memory_allocated() / GIB
    del model
    gc.collect()
    torch.cuda.empty_cache()
    _done(args)
    median = statistics.median(runs)
    return {"arm": "flux-fused" if fused else "flux", "five_variants_s": median, "runs_s": runs,
            "per_step_ms": 1000 * median / args.steps, "few_step_s": statistics.median(few) if few else None,
            "few_steps": args.few_steps, "peak_gib": peak, "compile_s": compile_s, "params": params,
            "sdpa": "diffusers default"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--arms", default="incasa,flux,flux-fused")
    ap.add_argument("--variants", type=int, default=5)
    ap.add_argument("--size", type=int, default=1024)
    ap.add_argument("--text-tokens", type=int, default=512)
    ap.add_argument("--steps", type=int, default=28)
    ap.add_argument("--few-steps", type=int, default=4, help="also time this many steps (the distilled sampler); 0: no")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--fp8", default="row", help="row | tensor | none")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--cap-gib", type=float, default=12.0, help="memory cap for the incasa arm (0: none)")
    ap.add_argument("--name", default="image_8b")
    ap.add_argument("--gate", default=None, help="a folder shared by one process per arm: time in turns (see above)")
    ap.add_argument("--turn", type=int, default=0, help="with --gate: this process times after turns 0..K-1")
    ap.add_argument("--of", type=int, default=1, help="with --gate: how many processes share the gate")
    ap.add_argument("--gate-timeout", type=float, default=900.0)
    ap.add_argument("--merge", default=None,
                    help="comma-separated result names of one arm each: merge them, measure nothing")
    ap.add_argument("--note", default=None, help="with --merge: how the parts were measured, kept in the JSON")
    args = ap.parse_args()
    if args.merge:
        _merge(args.merge.split(","), args.name, args.note)
        return
    args.fp8 = None if args.fp8 == "none" else args.fp8
    if not torch.cuda.is_available():
        print("image_8b.py needs a CUDA GPU; nothing to measure here.")
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    rows = []
    for arm in args.arms.split(","):
        try:
            if arm == "incasa":
                decode, row = run_incasa(args)
                rows += [row, decode]
            elif arm in ("flux", "flux-fused"):
                rows.append(run_flux(args, fused=arm == "flux-fused"))
            else:
                raise ValueError(f"unknown arm {arm!r}")
        except Exception as e:  # report the failed arm, keep measuring the others
            traceback.print_exc()
            rows.append({"arm": arm, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:300]}"})
            gc.collect()
            torch.cuda.empty_cache()
            torch.cuda.set_per_process_memory_fraction(1.0)
        finally:
            _done(args)  # a failed arm frees the gate for the others
        write_result(args.name, {"settings": vars(args), "rows": rows})
    ratios = _ratios(rows)
    path = write_result(args.name, {"settings": vars(args), "rows": rows, "ratios": ratios})
    _report(rows, ratios, path)


if __name__ == "__main__":
    main()
