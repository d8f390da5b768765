"""Draw a prompts x seeds grid of the shipped default (or --checkpoint) with the prompts written beside each row.

    python scripts/sample_grid.py -o docs/default_grid.png "a red apple, noto style" "a cat face, twemoji style" ...
"""

from __future__ import annotations

import argparse
from pathlib import Path

from PIL import Image, ImageDraw

from incasa.image.generate import generate_images, load_pipeline


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("prompts", nargs="+")
    ap.add_argument("-o", "--out", type=Path, required=True)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--scale", type=int, default=2, help="nearest-neighbour upscale of each cell, for viewing")
    args = ap.parse_args()
    pipe = load_pipeline(args.checkpoint)
    H, W = pipe.size
    cell, label_w = (W * args.scale, H * args.scale), 260
    grid = Image.new("RGB", (label_w + cell[0] * args.seeds, cell[1] * len(args.prompts)), "white")
    draw = ImageDraw.Draw(grid)
    for r, prompt in enumerate(args.prompts):
        draw.text((6, r * cell[1] + cell[1] // 2 - 6), prompt, fill="black")
        for c, img in enumerate(generate_images(prompt, n=args.seeds, seed=0, pipeline=pipe)):
            grid.paste(img.resize(cell, Image.NEAREST), (label_w + c * cell[0], r * cell[1]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp.png")
    grid.save(tmp)
    tmp.replace(args.out)
    print(args.out)


if __name__ == "__main__":
    main()
