"""The one-page PNG report of an image evaluation (incasa/image/eval.py), drawn with matplotlib.

    header       checkpoint, step, judge, the headline numbers in words
    left column  fidelity per prompt family (top-1 / top-5 bars, chance marked), compositional probes (with chance)
    right        the best and the worst prompts as grids of their variants (judged by the target's probability)
    bottom       curves across checkpoints (by training step): fidelity, Fréchet distance, memorisation, collapse
"""

from __future__ import annotations

import math
import textwrap
from pathlib import Path

import numpy as np
from PIL import Image

GRID_PROMPTS = 4  # prompts in each of the best / worst grids


def _ranked(result: dict) -> list[int]:
    """Indices of fidelity prompts, best first (top-1, then the mean probability of the prompted emoji)."""
    idx = [i for i, r in enumerate(result["prompts"]) if "top1" in r]
    return sorted(idx, key=lambda i: (-result["prompts"][i]["top1"], -result["prompts"][i]["target_prob"]))


def _grid(ax, rows: list[tuple[str, list[Image.Image]]], title: str) -> None:
    ncol = max(len(ims) for _, ims in rows)
    side = 64
    canvas = np.full((len(rows) * (side + 2), ncol * (side + 2), 3), 255, np.uint8)
    for r, (_, ims) in enumerate(rows):
        for c, im in enumerate(ims):
            arr = np.asarray(im.convert("RGB").resize((side, side)))
            canvas[r * (side + 2): r * (side + 2) + side, c * (side + 2): c * (side + 2) + side] = arr
    ax.imshow(canvas, interpolation="nearest")
    ax.set_yticks([r * (side + 2) + side / 2 for r in range(len(rows))])
    # two short lines per prompt, so the labels stay in the gap between the columns
    ax.set_yticklabels(["\n".join(textwrap.wrap(label, 22, max_lines=2, placeholder="…")) for label, _ in rows],
                       fontsize=7)
    ax.set_xticks([])
    ax.set_title(title, fontsize=9, loc="left")


def _curve(ax, history: list[dict], series: list[tuple], title: str) -> None:
    """One line per (getter, label) in `series`, over training step."""
    for key, label in series:
        pts = sorted((h.get("step") or 0, key(h)) for h in history if key(h) is not None)
        if pts:
            ax.plot([p for p, _ in pts], [v for _, v in pts], "o-", ms=3, label=label)
    if len(series) > 1:
        ax.legend(fontsize=6)
    ax.set_title(title, fontsize=8)
    ax.set_xlabel("training step", fontsize=7)
    ax.tick_params(labelsize=7)
    ax.grid(alpha=0.3)


def _get(d: dict, *path):
    for k in path:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def write_report(result: dict, images: list[list[Image.Image]], path: Path, history: list[dict] = ()) -> Path:
    """Draw the page for `result` (with the pictures it measured) and write it atomically as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 14), dpi=100)
    gs = fig.add_gridspec(4, 4, height_ratios=[0.28, 1.3, 1.3, 0.8], hspace=0.4, wspace=0.45, top=0.98, bottom=0.05,
                          left=0.06, right=0.98)
    fid, chance = result["fidelity"], result["fidelity_chance"]
    fd, mem, div = result["frechet"], result["memorisation"], result["diversity"]

    def fmt(v, spec=".3f"):
        return "n/a" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, spec)

    head = fig.add_subplot(gs[0, :])
    head.axis("off")
    lines = [f"incasa eval image   {result.get('checkpoint', '')}   (model {result.get('model', '')} "
             f"#{result.get('model_hash', '')}, step {result.get('step')})",
             f"judge: emoji classifier {result.get('classifier', {}).get('sha256', '')}, "
             f"{result.get('classifier', {}).get('num_classes', '?')} classes; held-out real top-1 "
             f"{fmt(_get(result, 'classifier', 'held_out_real', 'val_top1'))} (val) / "
             f"{fmt(_get(result, 'classifier', 'held_out_real', 'combo_top1'))} (style x emoji)",
             f"fidelity (mean of families) top-1 {fmt(_get(result, 'fidelity_overall', 'top1'))} / top-5 "
             f"{fmt(_get(result, 'fidelity_overall', 'top5'))} (chance {chance['top1']:.4f} / {chance['top5']:.4f}), "
             f"within-family retrieval {fmt(_get(result, 'fidelity_overall', 'retrieval_top1'))};   "
             f"{result['num_prompts']} prompts x {result['variants']} variants",
             f"Fréchet distance on judge features {fmt(fd.get('generated'), '.2f')} - NOT Inception-FID (floors: "
             f"random real training pictures {fmt(fd.get('floor_real_training'), '.2f')}, real picture of each "
             f"prompt {fmt(fd.get('floor_same_prompts'), '.2f')})",
             f"memorised {fmt(mem.get('share'))} (exact copies {fmt(mem.get('exact_share'))});   within-prompt "
             f"diversity {fmt(div.get('within_prompt_mean'))}, collapsed prompts {fmt(div.get('collapsed_share'))}, "
             f"mode collapse: {div.get('mode_collapse')}"]
    head.text(0, 1.1, "\n".join(lines), va="top", family="monospace", fontsize=8.5)

    ax = fig.add_subplot(gs[1, :2])
    fams = list(fid)
    xs = np.arange(len(fams))
    ax.bar(xs - 0.27, [fid[f]["top1"] for f in fams], 0.27, label="top-1")
    ax.bar(xs, [fid[f]["top5"] for f in fams], 0.27, label="top-5")
    ax.bar(xs + 0.27, [fid[f]["retrieval_top1"] for f in fams], 0.27, label="within-family retrieval")
    ax.axhline(chance["top5"], color="k", lw=0.8, ls="--", label="chance (top-5)")
    ax.scatter(xs + 0.27, [fid[f]["retrieval_chance"] for f in fams], color="k", marker="_", s=120,
               label="chance (retrieval)")
    ax.set_xticks(xs, fams, rotation=30, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title("prompt fidelity by caption family (judge: real-art classifier)", fontsize=9)
    ax.legend(fontsize=7)

    ax = fig.add_subplot(gs[2, :2])
    probes = result["probes"]
    names = list(probes)
    ax.bar(np.arange(len(names)), [probes[k]["accuracy"] for k in names], 0.6, label="accuracy")
    ax.scatter(np.arange(len(names)), [probes[k]["chance"] for k in names], color="k", marker="_", s=300,
               label="chance")
    ax.set_xticks(np.arange(len(names)), names, rotation=30, fontsize=7)
    ax.set_ylim(0, 1)
    ax.set_title("compositional probes (GenEval-style; one object per training picture)", fontsize=9)
    ax.legend(fontsize=7)

    order = _ranked(result)
    best = order[:GRID_PROMPTS]
    worst = order[::-1][:GRID_PROMPTS]
    rows = result["prompts"]
    if best:
        _grid(fig.add_subplot(gs[1, 2:]), [(rows[i]["prompt"], images[i]) for i in best], "best prompts")
        _grid(fig.add_subplot(gs[2, 2:]), [(rows[i]["prompt"], images[i]) for i in worst], "worst prompts")

    points = list(history) + [result]
    panels = [([(lambda h: _get(h, "fidelity_overall", "top5"), "top-5"),
                (lambda h: _get(h, "fidelity_overall", "retrieval_top1"), "within-family retrieval")], "fidelity"),
              ([(lambda h: _get(h, "frechet", "generated"), "generated")], "Fréchet distance (judge features)"),
              ([(lambda h: _get(h, "memorisation", "share"), "memorised")], "memorised share"),
              ([(lambda h: _get(h, "diversity", "collapsed_share"), "collapsed")], "collapsed prompts")]
    for k, (series, title) in enumerate(panels):
        _curve(fig.add_subplot(gs[3, k]), points, series, title)

    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)
    return path
