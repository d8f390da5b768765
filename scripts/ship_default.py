"""Copy a finished run into incasa/image/default/ as the shipped default: weights (half precision, as trained), with
the exact training command, wall time and final loss added to the header, plus the loss curve and metrics.

    python scripts/ship_default.py runs/emoji-small-x --name incasa-emoji-small --wall-minutes 42 \
        --command "incasa train image ..."
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

from incasa.train.checkpoint import read_file, save_file_atomic

DEFAULT = Path(__file__).resolve().parents[1] / "incasa" / "image" / "default"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--name", required=True)
    ap.add_argument("--command", required=True)
    ap.add_argument("--wall-minutes", type=float, required=True)
    ap.add_argument("--device", default="2-core CPU (torch 2.13.0+cpu)", help="where it was trained, in words")
    args = ap.parse_args()
    tensors, meta = read_file(args.run / "model.safetensors")
    rows = [json.loads(line) for line in (args.run / "metrics.jsonl").read_text().splitlines() if line.strip()]
    meta.update(name=args.name, command=args.command, train_wall_minutes=args.wall_minutes,
                final_loss=rows[-1]["loss"], train_device=args.device)
    DEFAULT.mkdir(parents=True, exist_ok=True)
    save_file_atomic(tensors, DEFAULT / "model.safetensors", meta)
    shutil.copyfile(args.run / "curve.png", DEFAULT / "curve.png")
    shutil.copyfile(args.run / "metrics.jsonl", DEFAULT / "metrics.jsonl")
    print(json.dumps({k: meta[k] for k in ("name", "step", "final_loss", "data_version", "command")}, indent=1))


if __name__ == "__main__":
    main()
