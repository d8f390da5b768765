"""The MoE language model against its dense twin, and decode speed single-stream vs batched.

quality  `incasa.text.train.train` runs twice on the same data folder with the same seed -- the MoE preset and
         its `-dense` twin (SwiGLU hidden = active expert width, so equal active parameters and equal FLOPs per
         token up to the router) -- so both see exactly the same token windows in the same order. Reported: final
         validation loss / perplexity (EMA weights, masked like training), training tokens/s, and for the MoE the
         per-expert load max/mean (worst layer) averaged over the last 20 % of steps and the router entropy.
speed    decode tokens/s of the trained MoE through the engine (KV cache, temperature 1, fixed seed): one stream,
         then B streams batched; prefill included. (Training tokens/s and MFU at long sequences on a GPU, and
         the grouped-GEMM numerics there: benchmarks/text_gpu.py.)

    python benchmarks/text_moe_vs_dense.py --data DIR [--preset small --steps 300 --seq-len 128 --batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parent.parent))
from common import write_result  # noqa: E402

from incasa.text.train import TrainConfig  # noqa: E402


def run_training(args, preset: str, out: Path) -> dict:
    from incasa.text.train import train

    cfg = TrainConfig(data=args.data, out=str(out), preset=preset, vocab_size=args.vocab_size, seq_len=args.seq_len,
                      steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=max(1, args.steps // 20),
                      eval_every=args.steps, ckpt_every=args.steps, eval_batches=args.eval_batches, seed=0,
                      device=args.device, bias_update_rule=args.bias_update_rule,
                      bias_update_rate=args.bias_update_rate, balance_loss_weight=args.balance_loss_weight)
    t0 = time.time()
    train(cfg, console=Console(stderr=True, quiet=True))
    wall = time.time() - t0
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in rows if "loss" in r]
    tail = train_rows[int(len(train_rows) * 0.8):]
    val = [r for r in rows if "val_loss" in r][-1]
    res = {"preset": preset, "val_loss": val["val_loss"], "val_ppl": val["val_ppl"],
           "train_loss": train_rows[-1]["loss"], "tokens_per_s": train_rows[-1]["tokens_per_s"], "wall_s": wall}
    if "load_max_over_mean" in train_rows[-1]:
        res["load_max_over_mean_last20pct"] = sum(r["load_max_over_mean"] for r in tail) / len(tail)
        res["load_max_over_mean_avg_layers_last20pct"] = sum(r["load_max_over_mean_avg"] for r in tail) / len(tail)
        res["router_entropy"] = train_rows[-1]["router_entropy"]
    return res


def decode_speed(checkpoint: Path, device: str, batch: int, new_tokens: int) -> dict:
    from incasa.text.chat import load_model
    from incasa.text.engine import Sampling, generate

    tm = load_model(checkpoint, device=device)
    prompt = tm.tokenizer.chat_prompt([{"role": "user", "content": "What does river mean?"}])
    s = Sampling(max_tokens=new_tokens, temperature=1.0, top_p=1.0, seed=0)
    generate(tm.model, tm.tokenizer, [prompt], Sampling(max_tokens=4, temperature=1.0, seed=0))  # warm-up
    out = {}
    for b in (1, batch):
        sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
        sync()
        t0 = time.time()
        comps = generate(tm.model, tm.tokenizer, [prompt] * b, s)
        sync()
        dt = time.time() - t0
        toks = sum(c.completion_tokens for c in comps)
        out[f"batch_{b}"] = {"tokens": toks, "seconds": dt, "tokens_per_s": toks / dt}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", required=True, help="text corpus folder (.jsonl / .txt)")
    ap.add_argument("--preset", default="small")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--vocab-size", type=int, default=4096)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--eval-batches", type=int, default=16)
    ap.add_argument("--decode-batch", type=int, default=8)
    ap.add_argument("--decode-tokens", type=int, default=64)
    ap.add_argument("--device", default="auto")
    ap.add_argument("--bias-update-rule", default=TrainConfig.bias_update_rule, help="sign | proportional | adaptive")
    ap.add_argument("--bias-update-rate", type=float, default=TrainConfig.bias_update_rate)
    ap.add_argument("--balance-loss-weight", type=float, default=None, help="default: the preset's")
    ap.add_argument("--name", default="text_moe_vs_dense")
    args = ap.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.set_num_threads(1) if args.device == "cpu" else None

    console = Console()
    tmp = Path(tempfile.mkdtemp(prefix="text-bench-"))
    try:
        moe = run_training(args, args.preset, tmp / "moe")
        # the dense run reuses the tokenizer and packed tokens: identical token stream by construction
        (tmp / "dense").mkdir()
        for f in ("tokenizer.json", "tokens.safetensors"):
            shutil.copy(tmp / "moe" / f, tmp / "dense" / f)
        dense = run_training(args, f"{args.preset}-dense", tmp / "dense")
        speed = decode_speed(tmp / "moe" / "model.safetensors", args.device, args.decode_batch, args.decode_tokens)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    from incasa.text.moe_lm import PRESETS, count_params

    t = Table(title=f"MoE vs dense twin, {args.steps} steps x {args.batch_size} x {args.seq_len} tokens "
                    f"({args.device})")
    for col in ("model", "active / total params", "val loss", "val ppl", "train tok/s", "load max/mean", "router H"):
        t.add_column(col)
    for r in (moe, dense):
        p = count_params(PRESETS[r["preset"]])
        t.add_row(r["preset"], f"{p['active'] / 1e6:.2f}M / {p['total'] / 1e6:.2f}M", f"{r['val_loss']:.3f}",
                  f"{r['val_ppl']:.1f}", f"{r['tokens_per_s']:.0f}",
                  f"{r.get('load_max_over_mean_last20pct', float('nan')):.2f}",
                  f"{r.get('router_entropy', float('nan')):.2f}")
    console.print(t)
    d = Table(title="decode (engine, KV cache)")
    for col in ("streams", "tokens", "seconds", "tokens/s"):
        d.add_column(col)
    for k, v in speed.items():
        d.add_row(k.split("_")[1], str(v["tokens"]), f"{v['seconds']:.2f}", f"{v['tokens_per_s']:.1f}")
    console.print(d)
    path = write_result(args.name, {"settings": vars(args), "moe": moe, "dense": dense, "decode": speed})
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
