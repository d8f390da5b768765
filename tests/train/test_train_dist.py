"""The FSDP2 training loop (incasa.image.train_dist): one process, exact resume, and torchrun with 2 gloo ranks whose
DCP checkpoint resumes in one process."""

import json
import os
import subprocess
import sys

import pytest
import torch

from incasa.image.generate import load_pipeline
from incasa.image.train import TrainConfig
from incasa.image.train_dist import ScaleConfig, _global_indices, main, train_distributed
from incasa.train.checkpoint import read_file


def _cfg(data, out, **kw):
    base = dict(data=str(data), out=str(out), preset="tiny", text_encoder="hash", batch_size=2, warmup=1, lr=3e-3,
                sample_every=1000, ckpt_every=2, log_every=1, device="cpu")
    return TrainConfig(**{**base, **kw})


def test_global_batches_cover_every_image_once_per_epoch():
    seen = torch.cat([_global_indices(s, 4, 8, seed=0) for s in range(2)])
    assert sorted(seen.tolist()) == list(range(8))
    assert _global_indices(2, 4, 8, 0).tolist() != _global_indices(0, 4, 8, 0).tolist()  # a new order per epoch
    assert len(_global_indices(1, 6, 8, 0)) == 6  # wraps into the next epoch


def test_one_process_trains_resumes_exactly_and_writes_a_usable_checkpoint(tiny_dataset, tmp_path):
    full = train_distributed(_cfg(tiny_dataset, tmp_path / "a", steps=4), ScaleConfig())
    train_distributed(_cfg(tiny_dataset, tmp_path / "b", steps=2), ScaleConfig())
    rest = train_distributed(_cfg(tiny_dataset, tmp_path / "b", steps=4), ScaleConfig())  # from out/dcp at step 2
    assert rest["losses"] == full["losses"][2:]
    wa, meta = read_file(tmp_path / "a" / "model.safetensors")
    wb, _ = read_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert meta["step"] == 4 and meta["kind"] == "incasa-image-dit"
    pipe = load_pipeline(tmp_path / "a" / "model.safetensors", device="cpu")  # generate/eval take it as is
    assert pipe.model.cfg.width == 32


def test_bad_input_is_refused(tiny_dataset, tmp_path, capsys):
    with pytest.raises(ValueError, match="unknown FP8 recipe"):
        train_distributed(_cfg(tiny_dataset, tmp_path / "x", steps=1), ScaleConfig(fp8="int4"))
    with pytest.raises(SystemExit):  # argparse: not a dataset folder
        main(["--data", str(tmp_path), "--out", str(tmp_path / "o"), "--text-encoder", "hash"])
    assert "not a dataset folder" in capsys.readouterr().err
    train_distributed(_cfg(tiny_dataset, tmp_path / "r", steps=2), ScaleConfig())
    assert main(["--data", str(tiny_dataset), "--out", str(tmp_path / "r"), "--preset", "small", "--text-encoder",
                 "hash", "--device", "cpu", "--steps", "3"]) == 2  # resuming into a run of another size
    assert "another model" in capsys.readouterr().err


def test_torchrun_two_ranks_then_resume_in_one_process(tiny_dataset, tmp_path):
    out = tmp_path / "two"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           "-m", "incasa.image.train_dist", "--data", str(tiny_dataset), "--out", str(out), "--preset", "tiny",
           "--text-encoder", "hash", "--steps", "3", "--batch-size", "2", "--ckpt-every", "3", "--lr", "3e-3",
           "--warmup", "1", "--log-every", "1", "--device", "cpu"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=240, env=env)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["step"] for row in rows] == [1, 2, 3] and rows[-1]["world_size"] == 2
    assert json.loads((out / "dcp" / "incasa.json").read_text())["world_size"] == 2
    two_rank_weights, _ = read_file(out / "model.safetensors")
    # the 2-rank DCP checkpoint resumes in ONE process (re-sharded) and goes on training
    rest = train_distributed(_cfg(tiny_dataset, out, steps=5, batch_size=4), ScaleConfig())
    assert rest["step"] == 5 and all(torch.isfinite(torch.tensor(rest["losses"])))
    after, _ = read_file(out / "model.safetensors")
    assert any(not torch.equal(after[k], two_rank_weights[k]) for k in after)


def test_latent_space_run_writes_a_checkpoint_that_generates_pixels(tmp_path):
    from incasa.image.autoencoder import AETrainConfig, train_autoencoder
    from incasa.image.generate import generate_images

    from ..conftest import make_dataset

    data = make_dataset(tmp_path / "data", num=8, size=32)
    train_autoencoder(AETrainConfig(data=str(data), out=str(tmp_path / "ae"), preset="tiny", steps=2, batch_size=4,
                                    warmup=1, sample_every=1000, ckpt_every=1000, device="cpu"))
    ae = str(tmp_path / "ae" / "model.safetensors")
    assert main(["--data", str(data), "--out", str(tmp_path / "z"), "--preset", "tiny", "--text-encoder", "hash",
                 "--autoencoder", ae, "--device", "cpu", "--steps", "2", "--batch-size", "2"]) == 0
    _, meta = read_file(tmp_path / "z" / "model.safetensors")
    assert meta["sample_size"] == [16, 16] and meta["image_size"] == [32, 32] and meta["dit"]["in_channels"] == 4
    pipe = load_pipeline(tmp_path / "z" / "model.safetensors", device="cpu")
    assert generate_images("a red square", n=1, steps=2, pipeline=pipe)[0].size == (32, 32)
    # resuming that run without its autoencoder is refused, not silently trained in pixel space
    assert main(["--data", str(data), "--out", str(tmp_path / "z"), "--preset", "tiny", "--text-encoder", "hash",
                 "--device", "cpu", "--steps", "3", "--batch-size", "2"]) == 2
