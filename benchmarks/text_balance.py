"""Expert load balance of the text MoE: where the per-step load max/mean comes from, and which bias rule does best.

The issue's goal is "expert load max/mean <= 1.2 after warm-up". The number a training log shows is one step's
max/mean over experts (worst layer, or averaged over layers) and it mixes three things:

floor      sampling noise: even a perfectly balanced router that sends each token to k experts at random gives
           max/mean > 1 for a finite batch. Simulated here (the multinomial of N tokens x k distinct experts).
content    the batch's text: a batch of Python documentation routes differently from a batch of fortunes, and
           the tokens of one window are correlated, so a batch of B windows behaves like far fewer than B*L
           independent tokens. No bias can fix that within a step: the bias is set before the batch is seen.
bias       what the rule controls: a bias that lags (too small a rate) or dithers (a fixed sign step) leaves a
           persistent imbalance on top of the two above.

decompose  a frozen model (the shipped default, and each trained run) routes many random windows; batches are
           formed from them and compared with (a) the same windows pooled (the long-run imbalance: what a better
           bias could still remove), (b) the per-batch ratio once that long-run imbalance is divided out (the
           content part) and (c) the multinomial floor at the same number of assignments. Per-source load shows
           which parts of the corpus route differently.
rules      `incasa.text.train.train` runs once per bias rule on the same data, seed and windows; every optimizer
           step's per-layer expert counts are recorded (by wrapping `update_balance_bias`, which still does the
           update). Reported after warm-up: per-step max/mean (worst layer and layer mean), the same over windows
           of W consecutive steps summed (what the bias can be judged on), the bias dither (mean |change| per
           step), and the validation loss of the EMA weights (balancing must not cost quality).

    python benchmarks/text_balance.py --data data/text [--preset small --steps 500 --seq-len 128 --batch-size 16]
    python benchmarks/text_balance.py --data data/text --only decompose   # the shipped default only (~2 min)

The recorded result (2 shared CPU cores, so the rules ran as five processes of 400 steps and were merged; the
partial files are not kept):
    python benchmarks/text_balance.py --data data/text --only decompose --name text_balance_decompose
    python benchmarks/text_balance.py --data data/text --only rules --steps 400 --decompose-runs \
        --work /tmp/tb/a --name text_balance_a --rules "sign 1e-2" "proportional 1e-2" "none (no bias)"
    (b: "adaptive 1e-2, floor 0.01" "sign 1e-3" "proportional 1e-2 + load EMA 0.9" "sign 1e-2 + balance loss 3e-3";
     c: "adaptive 1e-2"; d: "proportional 1e-2 + balance loss 3e-3"; e: "adaptive 1e-2 + balance loss 3e-3")
    python benchmarks/text_balance.py --data data/text --merge text_balance_decompose text_balance_a \
        text_balance_b text_balance_c text_balance_d text_balance_e

Writes benchmarks/results/text_balance.json and text_balance.png (worst-layer max/mean over steps per rule).
"""

from __future__ import annotations

import argparse
import json
import random
import shutil
import sys
import time
from pathlib import Path

import torch
from rich.console import Console
from rich.table import Table

sys.path.insert(0, str(Path(__file__).parent))
from common import RESULTS, write_result  # noqa: E402

# name -> TrainConfig overrides; the first is the shipped default's rule
RULES = {
    "sign 1e-2": dict(bias_update_rule="sign", bias_update_rate=1e-2),
    "sign 1e-3": dict(bias_update_rule="sign", bias_update_rate=1e-3),
    "proportional 1e-2": dict(bias_update_rule="proportional", bias_update_rate=1e-2),
    "proportional 1e-2 + load EMA 0.9": dict(bias_update_rule="proportional", bias_update_rate=1e-2,
                                             bias_load_ema=0.9),
    "adaptive 1e-2, floor 0.01": dict(bias_update_rule="adaptive", bias_update_rate=1e-2, bias_update_floor=0.01),
    "adaptive 1e-2": dict(bias_update_rule="adaptive", bias_update_rate=1e-2, bias_update_floor=0.1),
    "sign 1e-2 + balance loss 3e-3": dict(bias_update_rule="sign", bias_update_rate=1e-2,
                                          balance_loss_weight=3e-3),
    "proportional 1e-2 + balance loss 3e-3": dict(bias_update_rule="proportional", bias_update_rate=1e-2,
                                                  balance_loss_weight=3e-3),
    "adaptive 1e-2 + balance loss 3e-3": dict(bias_update_rule="adaptive", bias_update_rate=1e-2,
                                              bias_update_floor=0.1, balance_loss_weight=3e-3),
    "none (no bias)": dict(bias_update_rule="sign", bias_update_rate=0.0),
}


# ---------------------------------------------------------------- the three parts of one step's max/mean


def multinomial_floor(num_tokens: int, num_experts: int, k: int, trials: int = 200, seed: int = 0) -> float:
    """E[max/mean] of the load when each of num_tokens tokens picks k distinct experts uniformly at random."""
    g = torch.Generator().manual_seed(seed)
    ratios = []
    for _ in range(trials):
        idx = torch.rand(num_tokens, num_experts, generator=g).topk(k, dim=-1).indices.reshape(-1)
        c = torch.bincount(idx, minlength=num_experts).float()
        ratios.append(float(c.max() / c.mean()))
    return sum(ratios) / len(ratios)


@torch.no_grad()
def window_counts(model, windows_WL: torch.Tensor, chunk: int = 16, scores: list | None = None) -> torch.Tensor:
    """-> [W, layers, E]: assignments per expert of every window, routed by the model as it is (bias included).
    With `scores` (a list), the router scores of every token are appended to it, [chunk, layers, L, E] per chunk."""
    from incasa.nn.moe import MoE

    layers = [m for m in model.modules() if isinstance(m, MoE)]
    out, kept = [], []

    def hook(m, inputs, _output):
        x = inputs[0]
        idx, _, sc, _ = m.route(x.reshape(-1, x.shape[-1]))
        idx = idx.view(x.shape[0], -1)
        counts = torch.zeros(x.shape[0], m.cfg.num_experts).scatter_add_(1, idx.cpu(), torch.ones(idx.shape))
        out[-1].append(counts)
        if scores is not None:
            kept[-1].append(sc.view(x.shape[0], x.shape[1], -1).cpu())

    handles = [m.register_forward_hook(hook) for m in layers]
    was_training = model.training
    model.eval()
    try:
        for part in windows_WL.split(chunk):
            out.append([])
            kept.append([])
            model(part.to(next(model.parameters()).device))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)
    if scores is not None:
        scores.extend(torch.stack(k, 1) for k in kept)
    return torch.cat([torch.stack(o, 1) for o in out])


# ---------------------------------------------------------------- the controllers alone, on a frozen router

SIM_RULES = {  # name -> (rule, rate, load_ema, floor)
    "none": ("sign", 0.0, 0.0, 0.1),
    "sign 1e-2": ("sign", 1e-2, 0.0, 0.1),
    "sign 3e-3": ("sign", 3e-3, 0.0, 0.1),
    "sign 1e-3": ("sign", 1e-3, 0.0, 0.1),
    "proportional 1e-2": ("proportional", 1e-2, 0.0, 0.1),
    "proportional 1e-2 + load EMA 0.9": ("proportional", 1e-2, 0.9, 0.1),
    "adaptive 1e-2, floor 0.01": ("adaptive", 1e-2, 0.0, 0.01),
    "adaptive 1e-2": ("adaptive", 1e-2, 0.0, 0.1),
}


def simulate_rules(scores_WLTE: torch.Tensor, batch: int, k: int, steps: int, window: int, skip: int,
                   seed: int = 0) -> dict:
    """Every rule of SIM_RULES steers the bias of a frozen router: each step draws `batch` cached windows, routes
    them with top-k of scores + bias (each layer on its cached scores: a layer's input does not see the other
    layers' bias here, a second-order effect), and updates the bias with `incasa.nn.moe.bias_step`. Without a
    training router that drifts, what is left above the floor is content plus the controller's own dither/lag.
    The 'best constant bias' row is the bias that evens the load over all cached windows (found by long
    proportional steering on the whole pool): no constant bias can do better per step."""
    from incasa.nn.moe import bias_step

    W, layers, T, E = scores_WLTE.shape

    def route_counts(sel_scores, bias):  # [n, layers, T, E], [layers, E] -> [layers, E]
        idx = (sel_scores + bias[None, :, None]).topk(k, -1).indices
        return torch.zeros(layers, E).scatter_add_(1, idx.permute(1, 0, 2, 3).reshape(layers, -1),
                                                   torch.ones(layers, idx[..., 0].numel() * k // layers))

    pooled_bias, pooled_state = torch.zeros(layers, E), [{} for _ in range(layers)]
    for _ in range(150):  # no noise on the whole pool: the adaptive steps settle on the balancing bias
        c = route_counts(scores_WLTE, pooled_bias)
        pooled_bias += torch.stack([bias_step(c[j], 1e-2, "adaptive", state=pooled_state[j], floor=0.01)
                                    for j in range(layers)])
    out = {}
    for name, (rule, rate, ema, floor) in {"best constant bias": ("sign", 0.0, 0.0, 0.1), **SIM_RULES}.items():
        g = torch.Generator().manual_seed(seed)
        bias = pooled_bias.clone() if name == "best constant bias" else torch.zeros(layers, E)
        states, share_ema = [{} for _ in range(layers)], None
        per_step, counts_log, moves = [], [], []
        for _ in range(steps):
            c = route_counts(scores_WLTE[torch.randint(0, W, (batch,), generator=g)], bias)
            per_step.append(max_over_mean(c))
            counts_log.append(c)
            steer = c
            if ema > 0:
                share = c / c.sum(-1, keepdim=True)
                share_ema = share if share_ema is None else ema * share_ema + (1 - ema) * share
                steer = share_ema
            if rate > 0:
                d = torch.stack([bias_step(steer[j], rate, rule, 0.1, states[j], floor) for j in range(layers)])
                bias += d
                moves.append(float(d.abs().mean()))
        ps = torch.stack(per_step)[skip:]  # [steps, layers]
        cl = torch.stack(counts_log)[skip:]
        n = len(cl) // window
        win = max_over_mean(cl[:n * window].view(n, window, layers, E).sum(1))
        pooled = max_over_mean(route_counts(scores_WLTE, bias))
        out[name] = {"step_worst": float(ps.max(1).values.mean()), "step_mean": float(ps.mean()),
                     "step_worst_max": float(ps.max()), "window_worst": float(win.max(1).values.mean()),
                     "window_mean": float(win.mean()), "long_run_worst": float(pooled.max()),
                     "long_run_mean": float(pooled.mean()),
                     "bias_change_per_step": sum(moves[skip:]) / max(1, len(moves[skip:]))}
    return out


def max_over_mean(load: torch.Tensor) -> torch.Tensor:
    """[..., E] -> [...]"""
    return load.max(-1).values / load.mean(-1)


def decompose(counts_WLE: torch.Tensor, batch: int, k: int, seq_len: int, draws: int = 200, seed: int = 0) -> dict:
    """Per-batch max/mean of batches of `batch` windows drawn from the routed windows, split into its parts."""
    g = torch.Generator().manual_seed(seed)
    W, layers, E = counts_WLE.shape
    pooled = counts_WLE.sum(0)  # [layers, E]
    share = pooled / pooled.sum(-1, keepdim=True)
    per_batch, content = [], []
    for _ in range(draws):
        b = counts_WLE[torch.randperm(W, generator=g)[:batch]].sum(0)  # [layers, E]
        per_batch.append(max_over_mean(b))
        # the batch's load relative to each expert's long-run share: what is left if the bias had made the long
        # run perfectly even (first order; the bias would also move the batch's own choices)
        content.append(max_over_mean(b / share.clamp_min(1e-12)))
    per_batch, content = torch.stack(per_batch), torch.stack(content)  # [draws, layers]
    if (share == 0).any():  # an expert nobody chooses (no balancing): the content part is undefined
        content = torch.full_like(content, float("nan"))
    floor = multinomial_floor(batch * seq_len, E, k, trials=100, seed=seed)
    return {"batch_windows": batch, "tokens": batch * seq_len,
            "per_batch_worst": float(per_batch.max(1).values.mean()), "per_batch_mean": float(per_batch.mean()),
            "long_run_worst": float(max_over_mean(pooled).max()), "long_run_mean": float(max_over_mean(pooled).mean()),
            "content_worst": float(content.max(1).values.mean()), "content_mean": float(content.mean()),
            "multinomial_floor": floor}


def source_windows(data: str, tokenizer, seq_len: int, num_windows: int, fraction: float, seed: int):
    """Random windows from each file of the corpus (a random `fraction` of its documents, packed as in training),
    in proportion to the file's tokens -> (windows [W, L], source name per window)."""
    from incasa.text.data import pack

    rng = random.Random(seed)
    streams = {}
    for path in sorted(Path(data).glob("*.jsonl")):
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        docs = [json.loads(ln) for ln in rng.sample(lines, max(1, int(len(lines) * fraction)))]
        ids, _ = pack(docs, tokenizer)
        if len(ids) > seq_len + 1:
            streams[path.stem] = torch.from_numpy(ids).long()
    total = sum(len(s) for s in streams.values())
    g = torch.Generator().manual_seed(seed)
    wins, names = [], []
    for name, ids in streams.items():
        n = max(1, round(num_windows * len(ids) / total))
        starts = torch.randint(0, len(ids) - seq_len, (n,), generator=g)
        wins.append(ids[starts[:, None] + torch.arange(seq_len)[None]])
        names += [name] * n
    return torch.cat(wins), names


def analyse_model(model, tokenizer, args, seq_len: int, batches: list[int], console,
                  simulate: list[int] | None = None) -> dict:
    k = model.cfg.top_k
    t0 = time.time()
    wins, names = source_windows(args.data, tokenizer, seq_len, args.decompose_windows, args.doc_fraction, seed=1)
    scores = [] if simulate else None
    counts = window_counts(model, wins, scores=scores)
    res = {"windows": len(wins), "seq_len": seq_len, "by_batch": [decompose(counts, b, k, seq_len) for b in batches]}
    if simulate:
        scores = torch.cat(scores)
        res["simulated"] = {str(b): simulate_rules(scores, b, k, args.sim_steps, args.window, args.sim_steps // 6)
                            for b in simulate}
        res["simulated_floor"] = {str(b): multinomial_floor(b * seq_len, scores.shape[-1], k, trials=100)
                                  for b in simulate}
    per_source = {}
    for name in sorted(set(names)):
        sel = torch.tensor([n == name for n in names])
        pooled = counts[sel].sum(0)
        per_source[name] = {"windows": int(sel.sum()), "share_of_windows": float(sel.float().mean()),
                            "long_run_worst": float(max_over_mean(pooled).max()),
                            "long_run_mean": float(max_over_mean(pooled).mean()),
                            "share_per_layer": (pooled / pooled.sum(-1, keepdim=True)).round(decimals=3).tolist()}
    res["per_source"] = per_source
    res["seconds"] = time.time() - t0
    console.print(f"  routed {len(wins)} windows of {seq_len} tokens in {res['seconds']:.0f} s")
    return res


# ---------------------------------------------------------------- training with each rule


def run_folder(work: str, rule: str) -> Path:
    return Path(work) / rule.replace(" ", "_").replace("+", "and")


def run_rule(name: str, overrides: dict, args, cache: Path, console) -> dict:
    import incasa.text.train as text_train
    from incasa.text.chat import load_model
    from incasa.text.train import TrainConfig, train

    out = run_folder(args.work, name)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for f in ("tokenizer.json", "tokens.safetensors"):  # one tokenizer and one packed corpus for every rule
        if (cache / f).exists():
            shutil.copy(cache / f, out / f)
    steps_log = []
    inner = text_train.update_balance_bias

    def recording(model, *a, **kw):
        from incasa.nn.moe import MoE

        layers = [m for m in model.modules() if isinstance(m, MoE)]
        counts = torch.stack([m.tokens_per_expert.clone() for m in layers])
        before = torch.stack([m.expert_bias.clone() for m in layers])
        stats = inner(model, *a, **kw)
        after = torch.stack([m.expert_bias for m in layers])
        steps_log.append((counts, float((after - before).abs().mean())))
        return stats

    cfg = TrainConfig(data=args.data, out=str(out), preset=args.preset, seq_len=args.seq_len, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, warmup=max(1, args.steps // 20),
                      eval_every=args.steps, ckpt_every=args.steps, eval_batches=args.eval_batches, seed=0,
                      device="cpu", **overrides)
    text_train.update_balance_bias = recording
    t0 = time.time()
    try:
        train(cfg, console=Console(stderr=True, quiet=True))
    finally:
        text_train.update_balance_bias = inner
    wall = time.time() - t0
    if not (cache / "tokens.safetensors").exists():
        for f in ("tokenizer.json", "tokens.safetensors"):
            shutil.copy(out / f, cache / f)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    val = [r for r in rows if "val_loss" in r][-1]
    losses = [r["loss"] for r in rows if "loss" in r]

    counts = torch.stack([c for c, _ in steps_log])  # [steps, layers, E]
    dither = torch.tensor([d for _, d in steps_log])
    skip = int(args.steps * args.skip)
    tail = counts[skip:]
    step_ratio = max_over_mean(tail)  # [steps, layers]
    n_win = len(tail) // args.window
    windowed = tail[:n_win * args.window].view(n_win, args.window, *tail.shape[1:]).sum(1)
    win_ratio = max_over_mean(windowed)
    res = {"rule": name, "overrides": overrides, "val_loss": val["val_loss"], "val_ppl": val["val_ppl"],
           "train_loss_last10pct": sum(losses[-max(1, len(losses) // 10):]) / max(1, len(losses) // 10),
           "wall_s": wall, "after_step": skip,
           "step_worst": float(step_ratio.max(1).values.mean()), "step_mean": float(step_ratio.mean()),
           "step_worst_max": float(step_ratio.max()),
           "window_worst": float(win_ratio.max(1).values.mean()), "window_mean": float(win_ratio.mean()),
           "bias_change_per_step": float(dither[skip:].mean()),
           "series_step_worst": [round(float(v), 4) for v in max_over_mean(counts).max(1).values],
           "series_step_mean": [round(float(v), 4) for v in max_over_mean(counts).mean(1)]}
    if args.decompose_runs:
        tm = load_model(out / "model.safetensors", device="cpu")
        res["decompose"] = analyse_model(tm.model, tm.tokenizer, args, args.seq_len, args.decompose_batches, console)
    console.print(f"  {name}: val {res['val_loss']:.3f}  step worst {res['step_worst']:.3f} mean "
                  f"{res['step_mean']:.3f}  window worst {res['window_worst']:.3f}  ({wall:.0f} s)")
    return res


def plot(runs: list[dict], window: int, png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 4.5), sharey=True)
    for r in runs:
        s = torch.tensor(r["series_step_worst"])
        smooth = s.unfold(0, window, 1).mean(1) if len(s) >= window else s
        axes[0].plot(range(1, len(s) + 1), s.numpy(), lw=0.4, alpha=0.35)
        axes[1].plot(range(window, window + len(smooth)), smooth.numpy(), lw=1.3, label=r["rule"])
    for ax, title in zip(axes, ("per step (worst layer)", f"per step, running mean over {window} steps")):
        ax.axhline(1.2, color="k", ls="--", lw=0.8)
        ax.set_title(title)
        ax.set_xlabel("step")
        ax.set_ylim(1.0, 2.5)
    axes[0].set_ylabel("expert load max/mean")
    axes[1].legend(fontsize=8)
    fig.tight_layout()
    tmp = png.with_suffix(".tmp.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(png)


def _pair(a, b) -> str:
    return "n/a" if a is None or b is None or a != a or b != b else f"{a:.3f} / {b:.3f}"


def print_decomposition(d: dict, console) -> None:
    t = Table(title="shipped default: one batch's load max/mean, split into its parts (worst layer / layer mean)")
    for c in ("batch (windows x 256)", "per batch", "long run (bias-fixable)", "content part", "multinomial floor"):
        t.add_column(c, justify="right")
    for b in d["by_batch"]:
        t.add_row(f"{b['batch_windows']}", f"{b['per_batch_worst']:.3f} / {b['per_batch_mean']:.3f}",
                  f"{b['long_run_worst']:.3f} / {b['long_run_mean']:.3f}",
                  _pair(b['content_worst'], b['content_mean']), f"{b['multinomial_floor']:.3f}")
    console.print(t)
    for b, rows in d.get("simulated", {}).items():
        t = Table(title=f"the rules alone on the shipped default's frozen router: batches of {b} x 256, cold start, "
                        f"stats after 1/6 of the steps (multinomial floor {d['simulated_floor'][b]:.3f})")
        for c in ("rule", "step worst / mean", "step worst max", "10-step worst / mean", "long run worst / mean",
                  "|d bias|/step"):
            t.add_column(c, justify="right")
        for name, r in rows.items():
            t.add_row(name, f"{r['step_worst']:.3f} / {r['step_mean']:.3f}", f"{r['step_worst_max']:.3f}",
                      f"{r['window_worst']:.3f} / {r['window_mean']:.3f}",
                      f"{r['long_run_worst']:.3f} / {r['long_run_mean']:.3f}", f"{r['bias_change_per_step']:.1e}")
        console.print(t)
    t = Table(title="shipped default: long-run load max/mean of each source alone (worst layer / layer mean)")
    for c in ("source", "windows", "worst / mean"):
        t.add_column(c, justify="right")
    for name, s in d["per_source"].items():
        t.add_row(name, str(s["windows"]), f"{s['long_run_worst']:.3f} / {s['long_run_mean']:.3f}")
    console.print(t)


def print_rules(payload: dict, args, console) -> None:
    runs = payload["rules"]
    t = Table(title=f"{args.preset}, {args.steps} steps of {args.batch_size} x {args.seq_len}; load max/mean "
                    f"after step {int(args.steps * args.skip)} (multinomial floor per step "
                    f"{payload['floor_per_step']:.3f})")
    for c in ("rule", "step worst", "step mean", "step worst max", f"{args.window}-step worst",
              f"{args.window}-step mean", "|d bias|/step", "val loss"):
        t.add_column(c, justify="right")
    for r in runs:
        t.add_row(r["rule"], f"{r['step_worst']:.3f}", f"{r['step_mean']:.3f}", f"{r['step_worst_max']:.3f}",
                  f"{r['window_worst']:.3f}", f"{r['window_mean']:.3f}", f"{r['bias_change_per_step']:.2e}",
                  f"{r['val_loss']:.4f}")
    console.print(t)
    if any("decompose" in r for r in runs):
        t = Table(title=f"each trained run's exported model, frozen: batches of N windows x {args.seq_len} "
                        "(worst layer / layer mean)")
        for c in ("rule @ N", "per batch", "long run (bias-fixable)", "content part", "floor"):
            t.add_column(c, justify="right")
        for r in runs:
            for b in r.get("decompose", {}).get("by_batch", []):
                t.add_row(f"{r['rule']} @ {b['batch_windows']}",
                          f"{b['per_batch_worst']:.3f} / {b['per_batch_mean']:.3f}",
                          f"{b['long_run_worst']:.3f} / {b['long_run_mean']:.3f}",
                          _pair(b['content_worst'], b['content_mean']), f"{b['multinomial_floor']:.3f}")
        console.print(t)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", required=True, help="corpus folder (python -m incasa.text.data DIR)")
    p.add_argument("--only", choices=["all", "decompose", "rules"], default="all")
    p.add_argument("--rules", nargs="*", default=list(RULES), help=f"subset of: {', '.join(RULES)}")
    p.add_argument("--preset", default="small")
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=16)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--eval-batches", type=int, default=16)
    p.add_argument("--skip", type=float, default=0.2, help="warm-up share of steps left out of the statistics")
    p.add_argument("--window", type=int, default=10, help="steps summed for the windowed max/mean")
    p.add_argument("--decompose-windows", type=int, default=1024)
    p.add_argument("--doc-fraction", type=float, default=0.05, help="share of each file's documents to draw from")
    p.add_argument("--decompose-runs", action="store_true", help="also decompose each trained run (slower)")
    p.add_argument("--decompose-batches", type=int, nargs="+", default=[16, 128],
                   help="batch sizes (windows) for decomposing the trained runs")
    p.add_argument("--work", default="/tmp/incasa_text_balance")
    p.add_argument("--name", default="text_balance")
    p.add_argument("--sim-batches", type=int, nargs="*", default=[16, 64],
                   help="batch sizes (windows of 256) for the rules on the shipped default's frozen router")
    p.add_argument("--sim-steps", type=int, default=600)
    p.add_argument("--merge", nargs="*", default=[], help="combine these result names (no training)")
    args = p.parse_args()
    unknown = [r for r in args.rules if r not in RULES]
    if unknown:
        p.error(f"unknown rules {unknown}; choose from {list(RULES)}")
    torch.set_num_threads(1)
    console = Console()
    payload = {"args": vars(args)}
    name, merging = args.name, bool(args.merge)

    if merging:  # several partial runs (e.g. rules split over two processes) -> one result
        for part_name in args.merge:
            part = json.loads((RESULTS / f"{part_name}.json").read_text())
            if "shipped_default" in part:
                payload["shipped_default"] = part["shipped_default"]
            if "rules" in part:
                payload.setdefault("rules", []).extend(part["rules"])
                payload["floor_per_step"] = part["floor_per_step"]
                payload["args"] = {**part["args"], "merged_from": args.merge}
        if args.decompose_runs:  # re-route with each merged run's exported model, at the batches asked for now
            from incasa.text.chat import load_model

            for r in payload.get("rules", []):
                folder = run_folder(payload["args"]["work"], r["rule"])
                console.print(f"decomposing the run {r['rule']} ({folder})")
                tm = load_model(folder / "model.safetensors", device="cpu")
                r["decompose"] = analyse_model(tm.model, tm.tokenizer, args, payload["args"]["seq_len"],
                                               args.decompose_batches, console)
            payload["args"]["decompose_batches"] = args.decompose_batches
        order = list(RULES)
        payload["rules"] = sorted(payload.get("rules", []), key=lambda r: order.index(r["rule"]))
        args = argparse.Namespace(**payload["args"])

    if args.only in ("all", "decompose") and not merging:
        from incasa.text.chat import load_model

        tm = load_model(device="cpu")
        console.print("decomposing the shipped default (seq 256, its own bias)")
        payload["shipped_default"] = analyse_model(tm.model, tm.tokenizer, args, 256, [16, 64, 256], console,
                                                   simulate=args.sim_batches)

    if args.only in ("all", "rules") and not merging:
        cache = Path(args.work) / "cache"
        cache.mkdir(parents=True, exist_ok=True)
        if not (cache / "tokenizer.json").exists():  # the shipped default's BPE, learned on this corpus
            from incasa.text.chat import load_model

            load_model(device="cpu").tokenizer.save(cache / "tokenizer.json")
        runs = []
        for rule in args.rules:
            console.print(f"training with rule: {rule}")
            runs.append(run_rule(rule, RULES[rule], args, cache, console))
        payload["floor_per_step"] = multinomial_floor(args.batch_size * args.seq_len, 8, 2)
        payload["rules"] = runs

    if "shipped_default" in payload:
        print_decomposition(payload["shipped_default"], console)
    if payload.get("rules"):
        print_rules(payload, args, console)
        plot(payload["rules"], args.window, RESULTS / f"{name}.png")
    path = write_result(name, json.loads(json.dumps(payload), parse_constant=lambda c: None))  # NaN -> null
    console.print(f"wrote {path}")


if __name__ == "__main__":
    main()
