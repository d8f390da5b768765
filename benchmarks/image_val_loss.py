"""Rectified-flow validation loss of image checkpoints on fixed (image, caption, t, noise) draws, side by side.

The loss at fixed draws is a deterministic number, so two checkpoints compare fairly in one run. Reported on the
training split (how well the model fits what it saw), on heldout (images never trained on) and on heldout_combo
(emoji and style each seen, never together). A train loss far below the held-out ones means memorisation.
Usage: python benchmarks/image_val_loss.py --data data/emoji64 CKPT [CKPT ...] [--groups ...] [--num 512]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402


@torch.no_grad()
def val_loss(pipe, images, metas, num: int, seed: int = 0) -> float:
    from incasa.image.flow import rf_loss

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(len(metas), generator=g)[:num]
    total, count = 0.0, 0
    for chunk in idx.split(64):
        x0 = torch.from_numpy(images[chunk.numpy()]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        caps = [metas[i]["captions"][0] for i in chunk.tolist()]
        cond = pipe.encoder.encode(caps)
        H, W = x0.shape[-2:]
        n_tok = (H // pipe.model.cfg.patch_size) * (W // pipe.model.cfg.patch_size)
        total += float(rf_loss(pipe.model, x0, cond, n_tok, generator=g)) * len(chunk)
        count += len(chunk)
    return total / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoints", nargs="+")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--groups", default="", help="comma-separated emoji groups (default: all)")
    ap.add_argument("--num", type=int, default=512)
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from incasa.image.data import load_split
    from incasa.image.generate import load_pipeline

    groups = tuple(g for g in args.groups.split(",") if g) or None
    splits = {s: load_split(args.data, s, groups=groups) for s in ("train", "heldout", "heldout_combo")}
    rows = []
    for ck in args.checkpoints:
        pipe = load_pipeline(ck, device="cpu")
        rows.append({"checkpoint": ck, "step": pipe.meta.get("step"),
                     **{s: val_loss(pipe, *splits[s], args.num) for s in splits}})
    table = Table(title=f"rectified-flow loss at fixed draws (n <= {args.num})")
    for col in ("checkpoint", "step", "train", "heldout", "heldout_combo", "heldout / first"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["checkpoint"], str(r["step"]), f"{r['train']:.4f}", f"{r['heldout']:.4f}",
                      f"{r['heldout_combo']:.4f}", f"{r['heldout'] / rows[0]['heldout']:.3f}")
    Console().print(table)
    print(f"wrote {write_result('image_val_loss', {'rows': rows, 'groups': args.groups, 'num': args.num})}")


if __name__ == "__main__":
    main()
