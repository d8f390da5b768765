"""The MoE language model on a GPU: grouped GEMM == loop, training tokens/s and MFU, decode tokens/s.

Needs only torch (runs on a bare GPU machine). Three parts, random weights and random tokens throughout:
  1. numerics: one MoE layer in bf16, grouped dispatch (torch._grouped_mm) against the per-expert loop --
     forward output and gradients, max abs difference relative to the output scale.
  2. training speed: forward + backward + AdamW step under bf16 autocast for each preset at --seq-len, with the
     grouped and the loop dispatch, in each of --modes: eager, model (the network compiled, the float32 logits and
     the loss eager, as incasa.text.train did until stop 22) and loss (network and loss compiled as one graph, as
     incasa.text.train does now). A result row is written as soon as it is measured. MFU = tokens/s x FLOPs per token / peak,
     FLOPs per token = 6 x active non-embedding params + 6 x V x D (tied head) + 12 x depth x seq x D (attention),
     peak = --peak-tflops (bf16 dense; H100/H200 SXM: 989).
  3. decode: greedy KV-cache decoding of --decode-tokens tokens, 1 stream vs --decode-batch streams.

    python benchmarks/text_gpu.py [--presets small,base --seq-len 2048 --batch 8,16] [--modes eager,model,loss]
        [--profile]   # also the top CUDA kernels of one training step of the last setting, as a text table
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import RESULTS, write_result  # noqa: E402

from incasa.nn.moe import MoE, MoEConfig, grouped_mm_works  # noqa: E402
from incasa.text.moe_lm import PRESETS, KVCache, MoELM, count_params  # noqa: E402


def numerics() -> dict:
    torch.manual_seed(0)
    base = MoE(MoEConfig(dim=512, num_experts=16, top_k=4, expert_hidden=256, dispatch="grouped")).cuda()
    loop = MoE(MoEConfig(dim=512, num_experts=16, top_k=4, expert_hidden=256, dispatch="loop")).cuda()
    loop.load_state_dict(base.state_dict())
    x = torch.randn(4, 1000, 512, device="cuda")
    up = torch.randn_like(x)
    res = []
    for m in (base, loop):
        xi = x.clone().requires_grad_()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            y, _ = m(xi)
        y.float().backward(up)
        res.append((y.float(), xi.grad.float(), m.w13.grad.float()))
    scale = res[1][0].detach().abs().max()
    return {"grouped_mm_works_bf16": grouped_mm_works("cuda", torch.bfloat16),
            "max_abs_diff_out": float((res[0][0] - res[1][0]).detach().abs().max()), "out_scale": float(scale),
            "max_abs_diff_grad_x": float((res[0][1] - res[1][1]).abs().max()),
            "max_abs_diff_grad_w13": float((res[0][2] - res[1][2]).abs().max()),
            "grad_w13_scale": float(res[1][2].abs().max())}


def train_speed(preset: str, seq_len: int, batch: int, dispatch: str, compile_: bool | str, peak: float,
                steps: int = 10, compile_mode: str | None = None, profile: Path | None = None):
    import torch.nn.functional as F

    cfg = replace(PRESETS[preset], max_seq_len=max(PRESETS[preset].max_seq_len, seq_len), dispatch=dispatch)
    torch.manual_seed(0)
    model = MoELM(cfg).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=True)
    x = torch.randint(0, cfg.vocab_size, (batch, seq_len + 1), device="cuda")

    # compile True: the network compiled, the float32 logits and the loss eager (as incasa.text.train does);
    # compile "loss": network and loss in one graph, so the cast and the 32k-way softmax fuse and the float32
    # logits are never stored whole (the profile of the first kind shows the eager softmax at ~7% of the step)
    fwd = torch.compile(model, mode=compile_mode) if compile_ is True else model

    def loss_fn(tokens):
        logits, aux = fwd(tokens[:, :-1])
        return F.cross_entropy(logits.flatten(0, 1), tokens[:, 1:].flatten()) + aux

    loss_c = torch.compile(loss_fn, mode=compile_mode) if compile_ == "loss" else loss_fn

    def step():
        with torch.autocast("cuda", dtype=torch.bfloat16):
            loss = loss_c(x)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    torch.cuda.reset_peak_memory_stats()
    for _ in range(3):
        step()
    torch.cuda.synchronize()
    t0 = time.time()
    for _ in range(steps):
        step()
    torch.cuda.synchronize()
    dt = (time.time() - t0) / steps
    if profile is not None:  # where the step's time goes: the kernels by total CUDA time
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            step()
            torch.cuda.synchronize()
        profile.write_text(prof.key_averages().table(sort_by="cuda_time_total", row_limit=40, max_name_column_width=90))
    p = count_params(cfg)
    flops = 6 * p["active_non_embedding"] + 6 * cfg.vocab_size * cfg.dim + 12 * cfg.depth * seq_len * cfg.dim
    tps = batch * seq_len / dt
    return {"preset": preset, "dispatch": dispatch, "compile": compile_, "compile_mode": compile_mode,
            "seq_len": seq_len, "batch": batch,
            "step_ms": 1e3 * dt, "tokens_per_s": tps, "mfu": tps * flops / (peak * 1e12),
            "active_params": p["active"], "total_params": p["total"],
            "peak_memory_gb": torch.cuda.max_memory_allocated() / 1e9}


@torch.no_grad()
def decode_speed(preset: str, batch: int, new_tokens: int) -> dict:
    cfg = PRESETS[preset]
    torch.manual_seed(0)
    model = MoELM(cfg).cuda().to(torch.bfloat16).eval()
    out = {}
    for b in (1, batch):
        prompt = torch.randint(0, cfg.vocab_size, (b, 16), device="cuda")
        for rep in range(2):  # first pass warms up kernels
            torch.cuda.synchronize()
            t0 = time.time()
            cache = KVCache(cfg, b, 16 + new_tokens, "cuda", torch.bfloat16)
            logits, _ = model(prompt, cache=cache)
            for _ in range(new_tokens):
                nxt = logits[:, -1].argmax(-1, keepdim=True)
                logits, _ = model(nxt, cache=cache)
            torch.cuda.synchronize()
            dt = time.time() - t0
        out[f"batch_{b}"] = {"tokens": b * new_tokens, "seconds": dt, "tokens_per_s": b * new_tokens / dt}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", default="small,base")
    ap.add_argument("--seq-len", type=int, default=2048)
    ap.add_argument("--batch", default="8", help="comma-separated batch sizes (sequences per step)")
    ap.add_argument("--compile-mode", default=None, help="torch.compile mode of the compiled rows (default: none)")
    ap.add_argument("--modes", default="eager",
                    help="comma-separated: eager | model (network compiled, loss eager) | loss (both, one graph)")
    ap.add_argument("--profile", action="store_true", help="write the kernel table of the last setting beside the JSON")
    ap.add_argument("--peak-tflops", type=float, default=989.0)
    ap.add_argument("--dispatches", default="grouped,loop")
    ap.add_argument("--name", default="text_gpu")
    ap.add_argument("--decode-batch", type=int, default=32)
    ap.add_argument("--decode-tokens", type=int, default=128, help="0: skip the decode part")
    args = ap.parse_args()
    modes = {"eager": False, "model": True, "loss": "loss"}
    if bad := [m for m in args.modes.split(",") if m not in modes]:
        raise SystemExit(f"unknown --modes {bad}; choose from {', '.join(modes)}")
    if not torch.cuda.is_available():
        raise SystemExit("needs CUDA")
    torch.backends.cuda.matmul.allow_tf32 = True
    num = numerics()
    print("numerics grouped vs loop:", num, flush=True)
    rows = []
    compiled = [modes[m] for m in args.modes.split(",")]
    settings = [(preset, int(batch), dispatch, c) for preset in args.presets.split(",")
                for batch in args.batch.split(",") for dispatch in args.dispatches.split(",") for c in compiled]
    RESULTS.mkdir(parents=True, exist_ok=True)
    for i, (preset, batch, dispatch, c) in enumerate(settings):
        prof = RESULTS / f"{args.name}_profile.txt" if args.profile and i == len(settings) - 1 else None
        try:
            r = train_speed(preset, args.seq_len, batch, dispatch, c, args.peak_tflops,
                            compile_mode=args.compile_mode if c else None, profile=prof)
        except torch.OutOfMemoryError as e:  # a too-large batch is a result, not the end of the sweep
            r = {"preset": preset, "dispatch": dispatch, "compile": c, "batch": batch, "error": str(e).splitlines()[0]}
            print(r, flush=True)
            torch.cuda.empty_cache()
            continue
        rows.append(r)
        write_result(args.name, {"settings": vars(args), "numerics": num, "training": rows})  # a cut-short call keeps it
        print(f"{preset:6s} b={batch:<3d} {dispatch:8s} compile={c!s:5s} {r['step_ms']:8.1f} ms/step "
              f"{r['tokens_per_s']:10.0f} tok/s  MFU {100 * r['mfu']:5.1f}%  {r['peak_memory_gb']:.1f} GB",
              flush=True)
    dec = decode_speed("small", args.decode_batch, args.decode_tokens) if args.decode_tokens > 0 else None
    print("decode small bf16:", dec)
    path = write_result(args.name, {"settings": vars(args), "numerics": num, "training": rows, "decode": dec})
    print("wrote", path)


if __name__ == "__main__":
    main()
