"""Shared fixtures: a tiny synthetic emoji-format dataset and a tiny trained checkpoint (seconds on CPU)."""

import json

import numpy as np
import pytest
import torch
from PIL import Image


@pytest.fixture(autouse=True, scope="session")
def _private_keys_and_audit_log(tmp_path_factory):
    # never touch the user's ~/.config/incasa/keys or audit log from tests
    import os

    root = tmp_path_factory.mktemp("incasa-home")
    saved = {k: os.environ.get(k) for k in ("INCASA_KEYS_DIR", "INCASA_AUDIT_LOG")}
    os.environ["INCASA_KEYS_DIR"] = str(root / "keys")
    os.environ["INCASA_AUDIT_LOG"] = str(root / "audit.jsonl")
    yield root
    for k, v in saved.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


@pytest.fixture(autouse=True)
def _one_thread():
    # two cores shared with other work: one intra-op thread keeps tiny models fast and timings stable
    torch.set_num_threads(1)


def make_dataset(root, num=8, size=16):
    """`num` flat-coloured squares on white, in the on-disk format of `incasa data emoji` (index.json + shards)."""
    import io

    from incasa.image.data import _ShardWriter

    root.mkdir(parents=True, exist_ok=True)
    colours = {"red": (220, 30, 30), "green": (30, 180, 60), "blue": (40, 60, 220), "yellow": (240, 210, 40)}
    writer = _ShardWriter(root, "train", per_shard=5)
    rng = np.random.default_rng(0)
    for i in range(num):
        name = list(colours)[i % 4]
        img = np.full((size, size, 3), 255, np.uint8)
        a, b = sorted(rng.integers(2, size - 2, 2))
        img[a:b + 2, a:b + 2] = colours[name]
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG")
        meta = {"hexcode": f"{i:04x}", "style": "noto", "group": "symbols", "labels": {"en": f"{name} square"},
                "captions": [f"a {name} square", f"{name} square, noto style"], "split": "train"}
        writer.write(f"noto_{i:04x}", buf.getvalue(), meta)
    writer.close()
    index = {"data_version": "test-v1", "size": size, "shards": {"train": writer.paths, "heldout": [],
                                                                 "heldout_combo": []}}
    (root / "index.json").write_text(json.dumps(index))
    return root


@pytest.fixture
def tiny_dataset(tmp_path):
    return make_dataset(tmp_path / "data")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory):
    from incasa.image.train import TrainConfig, train

    root = tmp_path_factory.mktemp("ckpt")
    data = make_dataset(root / "data")
    train(TrainConfig(data=str(data), out=str(root / "run"), preset="tiny", text_encoder="hash", steps=4,
                      batch_size=4, warmup=2, sample_every=100, ckpt_every=100))
    return root / "run" / "model.safetensors"
