import json

import pytest
import torch

from incasa.image.train import TrainConfig, train
from incasa.train.checkpoint import read_file, save_file_atomic


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), preset="tiny", text_encoder="hash", batch_size=4, warmup=2,
                sample_every=1000, ckpt_every=1000, log_every=1)
    return TrainConfig(**{**base, **kw})


def test_loss_falls_when_overfitting(tiny_dataset, tmp_path):
    r = train(_cfg(tiny_dataset, tmp_path / "run", steps=120, lr=3e-3, warmup=10, batch_size=8, cfg_dropout=0.0))
    first, last = sum(r["losses"][:10]) / 10, sum(r["losses"][-10:]) / 10
    assert last < 0.75 * first, (first, last)  # flow matching keeps an irreducible part
    assert (tmp_path / "run" / "curve.png").stat().st_size > 0
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 120 and "images_per_s" in rows[-1]


def test_exact_resume_matches_uninterrupted_run(tiny_dataset, tmp_path):
    full = train(_cfg(tiny_dataset, tmp_path / "a", steps=6, ckpt_every=3))
    first = train(_cfg(tiny_dataset, tmp_path / "b", steps=3, ckpt_every=3))
    rest = train(_cfg(tiny_dataset, tmp_path / "b", steps=6, ckpt_every=3))  # resumes from step 3
    assert first["losses"] + rest["losses"] == full["losses"]
    wa, _ = read_file(tmp_path / "a" / "model.safetensors")
    wb, _ = read_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_sample_grid_and_refusals(tiny_dataset, tmp_path):
    train(_cfg(tiny_dataset, tmp_path / "run", steps=2, sample_every=2))
    assert (tmp_path / "run" / "samples" / "step_0000002.png").exists()
    with pytest.raises(ValueError, match="unknown preset"):
        train(_cfg(tiny_dataset, tmp_path / "x", preset="huge"))
    with pytest.raises(ValueError, match="another model"):  # resuming into a run of a different size
        train(_cfg(tiny_dataset, tmp_path / "run", steps=4, preset="small"))


def test_checkpoint_round_trip_and_atomic_write(tmp_path):
    t = {"w": torch.arange(6.0).view(2, 3)}
    save_file_atomic(t, tmp_path / "c.safetensors", {"step": 7})
    back, meta = read_file(tmp_path / "c.safetensors")
    assert torch.equal(back["w"], t["w"]) and meta == {"step": 7}
    assert [p.name for p in tmp_path.iterdir()] == ["c.safetensors"]  # no temp file left behind
    (tmp_path / "bad.safetensors").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json")
    with pytest.raises(ValueError, match="corrupt"):
        read_file(tmp_path / "bad.safetensors")
