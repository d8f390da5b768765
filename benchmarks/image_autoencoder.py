"""Reconstruction quality of an incasa autoencoder on held-out emoji, against the trivial codec of the same size.

A latent DiT can never draw better than its autoencoder reconstructs, so the reconstruction PSNR is the ceiling a
latent default would have; the pixel-space default has no such ceiling. The anchor in the same run: bilinear
down- and up-sampling by the autoencoder's factor (a "latent" of 3 channels instead of the autoencoder's C).
Usage: python benchmarks/image_autoencoder.py --data data/emoji64 runs/ae-emoji/model.safetensors
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).parent))
from common import write_result  # noqa: E402


@torch.no_grad()
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("checkpoint")
    ap.add_argument("--data", type=Path, required=True)
    args = ap.parse_args()
    from rich.console import Console
    from rich.table import Table

    from incasa.image.autoencoder import load_autoencoder, psnr
    from incasa.image.data import load_split
    from incasa.train.checkpoint import read_metadata

    ae = load_autoencoder(args.checkpoint)
    meta = read_metadata(Path(args.checkpoint))
    rows = []
    for split in ("train", "heldout", "heldout_combo"):
        images, _ = load_split(args.data, split)
        x = torch.from_numpy(images[:512]).permute(0, 3, 1, 2).float().div(127.5).sub(1)
        rec = torch.cat([ae.decode(ae.encode(c)) for c in x.split(64)])
        small = F.interpolate(x, scale_factor=1 / ae.factor, mode="bilinear", antialias=True)
        base = F.interpolate(small, size=x.shape[-2:], mode="bilinear")
        rows.append({"split": split, "n": len(x), "autoencoder_psnr_db": psnr(rec, x),
                     "bilinear_psnr_db": psnr(base, x)})
    table = Table(title=f"reconstruction PSNR, {meta['preset']} autoencoder (step {meta['step']}, factor "
                        f"{ae.factor}, {ae.cfg.latent_channels} latent channels)")
    for col in ("split", "n", "autoencoder dB", f"bilinear /{ae.factor} dB", "difference dB"):
        table.add_column(col)
    for r in rows:
        table.add_row(r["split"], str(r["n"]), f"{r['autoencoder_psnr_db']:.2f}", f"{r['bilinear_psnr_db']:.2f}",
                      f"{r['autoencoder_psnr_db'] - r['bilinear_psnr_db']:+.2f}")
    Console().print(table)
    print(f"wrote {write_result('image_autoencoder', {'checkpoint': args.checkpoint, 'step': meta['step'], 'rows': rows})}")


if __name__ == "__main__":
    main()
