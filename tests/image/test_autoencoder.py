"""The in-house autoencoder: shapes, unit-variance latents, learning, exact resume, round trip, refusals."""

import pytest
import torch
from typer.testing import CliRunner

from incasa.cli import app
from incasa.image.autoencoder import (AE_PRESETS, AETrainConfig, Autoencoder, load_autoencoder, psnr,
                                      train_autoencoder)
from incasa.train.checkpoint import read_file, read_metadata

from ..conftest import make_dataset


@pytest.fixture(scope="module")
def ae_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("ae") / "data"
    make_dataset(root, num=8, size=16)
    return root


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), preset="tiny", steps=4, batch_size=4, lr=3e-3, warmup=1,
                log_every=1, sample_every=1000, ckpt_every=2, device="cpu")
    return AETrainConfig(**{**base, **kw})


def test_shapes_and_factor():
    for name in ("tiny", "emoji"):
        ae = Autoencoder(AE_PRESETS[name])
        x = torch.rand(2, 3, 32, 32) * 2 - 1
        z = ae.encode(x)
        assert z.shape == (2, AE_PRESETS[name].latent_channels, 32 // ae.factor, 32 // ae.factor)
        assert ae.decode(z).shape == x.shape
    assert Autoencoder(AE_PRESETS["f8c16"]).factor == 8 and AE_PRESETS["f8c16"].latent_channels == 16


def test_learns_and_round_trips(ae_data, tmp_path):
    long = train_autoencoder(_cfg(ae_data, tmp_path / "c", steps=60, ckpt_every=60))
    assert sum(long["losses"][-5:]) < 0.5 * sum(long["losses"][:5])  # it learns to reconstruct flat squares
    ae = load_autoencoder(tmp_path / "c" / "model.safetensors")
    meta = read_metadata(tmp_path / "c" / "model.safetensors")
    assert meta["kind"] == "incasa-autoencoder" and meta["train_psnr_db"] == pytest.approx(long["train_psnr_db"])
    from incasa.image.data import load_split

    images, _ = load_split(ae_data, "train")
    x = torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1)
    z = ae.encode(x)
    assert 0.3 < float(z.std()) < 3.0  # scaled towards unit variance (fp16 weights, 8 images)
    assert psnr(ae.decode(z), x) > psnr(torch.zeros_like(x), x) + 5


def test_exact_resume(ae_data, tmp_path):
    full = train_autoencoder(_cfg(ae_data, tmp_path / "a", steps=4, ckpt_every=2))
    first = train_autoencoder(_cfg(ae_data, tmp_path / "b", steps=2, ckpt_every=2))
    rest = train_autoencoder(_cfg(ae_data, tmp_path / "b", steps=4, ckpt_every=2))
    assert first["losses"] + rest["losses"] == full["losses"]
    wa, _ = read_file(tmp_path / "a" / "model.safetensors")
    wb, _ = read_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_cli_refusals(ae_data, tmp_path):
    r = CliRunner().invoke(app, ["train", "autoencoder", "--data", str(ae_data), "--out", str(tmp_path / "x"),
                                 "--preset", "huge"])
    assert r.exit_code == 2 and "unknown autoencoder preset" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["train", "autoencoder", "--data", str(tmp_path / "nope"), "--out",
                                 str(tmp_path / "y")])
    assert r.exit_code == 2 and "Traceback" not in r.output
    from incasa.train.checkpoint import save_file_atomic

    save_file_atomic({"w": torch.zeros(1)}, tmp_path / "bad.safetensors", {"kind": "something-else"})
    with pytest.raises(ValueError, match="not an incasa autoencoder"):
        load_autoencoder(tmp_path / "bad.safetensors")
