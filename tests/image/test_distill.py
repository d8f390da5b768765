"""The few-step student (incasa/image/distill.py): deterministic pairs, the reflow objective, resume, the sampler
defaults a student checkpoint carries into generate, and the CLI's refusals."""

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from incasa.cli import app
from incasa.image.distill import DistillConfig, distill, pair_caption_ids, reflow_loss, sampler_grid
from incasa.image.flow import time_shift
from incasa.image.generate import generate_images, load_pipeline, sampler_defaults
from incasa.train.checkpoint import read_file, read_metadata

from ..conftest import make_dataset

runner = CliRunner()


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    """A tiny text-to-image model trained long enough (80 steps, ~2 s) to draw something other than grey."""
    from incasa.image.train import TrainConfig, train

    root = tmp_path_factory.mktemp("teacher")
    data = make_dataset(root / "data")
    train(TrainConfig(data=str(data), out=str(root / "run"), preset="tiny", text_encoder="hash", steps=80, lr=3e-3,
                      warmup=10, batch_size=8, sample_every=1000, ckpt_every=1000))
    return root / "run" / "model.safetensors"


def _cfg(teacher, out, **kw):
    base = dict(data=str(teacher.parent.parent / "data"), out=str(out), teacher=str(teacher), pairs=16, chunk=8,
                teacher_steps=4, steps=4, batch_size=4, warmup=1, val_pairs=4, log_every=1, sample_every=100,
                ckpt_every=100, lr=1e-3)
    return DistillConfig(**{**base, **kw})


def test_pairs_are_deterministic_for_a_seed(teacher, tmp_path):
    distill(_cfg(teacher, tmp_path / "a", steps=1))
    distill(_cfg(teacher, tmp_path / "b", steps=1))
    distill(_cfg(teacher, tmp_path / "c", steps=1, seed=1))
    a, _ = read_file(tmp_path / "a" / "pairs" / "chunk_00001.safetensors")
    b, _ = read_file(tmp_path / "b" / "pairs" / "chunk_00001.safetensors")
    c, _ = read_file(tmp_path / "c" / "pairs" / "chunk_00001.safetensors")
    assert torch.equal(a["z"], b["z"]) and torch.equal(a["x"], b["x"])
    assert not torch.equal(a["z"], c["z"])
    assert a["x"].abs().max() <= 1 and a["x"].std() > 0.01  # a picture in the pixel range, not a constant
    # every caption gets the same number of seeds (rounds of permutations)
    ids = pair_caption_ids(5, 12, seed=0)
    assert sorted(torch.bincount(ids, minlength=5).tolist()) == [2, 2, 2, 3, 3]


class _Oracle(torch.nn.Module):
    """Predicts a fixed picture whatever it is shown (the DiT's x0-prediction interface)."""

    def __init__(self, x0):
        super().__init__()
        self.x0 = x0

    def forward(self, x_t, t, tokens, mask, pooled):
        return self.x0


def test_reflow_loss_is_zero_only_for_the_straight_line_target():
    g = torch.Generator().manual_seed(0)
    x0, eps = torch.randn(6, 3, 8, 8, generator=g), torch.randn(6, 3, 8, 8, generator=g)
    cond = {"tokens": torch.zeros(6, 2, 4), "mask": torch.ones(6, 2, dtype=torch.bool), "pooled": torch.zeros(6, 4)}
    grid = sampler_grid(4, num_tokens=1)
    exact = reflow_loss(_Oracle(x0), x0, eps, cond, 1, generator=torch.Generator().manual_seed(1), grid_t=grid,
                        grid_share=0.5)
    assert float(exact) < 1e-10
    wrong = reflow_loss(_Oracle(eps), x0, eps, cond, 1, generator=torch.Generator().manual_seed(1), grid_t=grid,
                        grid_share=0.5)  # a model that returns the noise instead of the picture
    assert float(wrong) > 0.5
    # the grid is the 4-step sampler's nonzero times, and contains the 2- and 1-step grids
    assert torch.allclose(grid, time_shift(torch.tensor([1.0, 0.75, 0.5, 0.25]), 1))
    assert set(sampler_grid(2, 1).tolist()) <= set(grid.tolist()) and sampler_grid(1, 1).tolist() == [1.0]


def test_student_learns_the_pairs_and_resumes_exactly(teacher, tmp_path):
    kw = dict(steps=40, lr=3e-3, batch_size=8, val_pairs=0, sample_every=40)  # no held-out pairs: overfit them all
    full = distill(_cfg(teacher, tmp_path / "full", **kw))
    rows = [json.loads(line) for line in (tmp_path / "full" / "metrics.jsonl").read_text().splitlines()]
    assert rows[-1]["step"] == 40 and (tmp_path / "full" / "curve.png").stat().st_size > 0
    assert sum(full["losses"][-8:]) < 0.7 * sum(full["losses"][:8]), full["losses"]
    # resume: 6 steps, stopped at 3 and re-run, equals 6 uninterrupted (pairs are read back, not redrawn)
    one = distill(_cfg(teacher, tmp_path / "r", steps=6, ckpt_every=3, warmup=3))  # (same lr up to step 3)
    distill(_cfg(teacher, tmp_path / "s", steps=3, ckpt_every=3, warmup=3))
    before = (tmp_path / "s" / "pairs" / "chunk_00000.safetensors").stat().st_mtime_ns
    rest = distill(_cfg(teacher, tmp_path / "s", steps=6, ckpt_every=3, warmup=3))
    assert (tmp_path / "s" / "pairs" / "chunk_00000.safetensors").stat().st_mtime_ns == before
    first = [json.loads(line)["loss"] for line in (tmp_path / "s" / "metrics.jsonl").read_text().splitlines()
             if "loss" in line]
    assert first == one["losses"] and rest["losses"] == one["losses"][3:]
    with pytest.raises(ValueError, match="another teacher or with other settings"):
        distill(_cfg(teacher, tmp_path / "s", teacher_steps=3))


def test_student_checkpoint_carries_its_sampler_into_generate(teacher, tmp_path):
    distill(_cfg(teacher, tmp_path / "run", student_steps=2))
    path = tmp_path / "run" / "model.safetensors"
    meta = read_metadata(path)
    assert meta["sampler"] == {"steps": 2, "guidance": 1.0} and meta["teacher"]["model_hash"]
    assert set(meta["val"]) == {"val_mse_1", "val_mse_2", "val_mse_4"}
    tensors, _ = read_file(path)
    assert all(v.dtype == torch.float16 for v in tensors.values())
    student, teacher = load_pipeline(path), load_pipeline(teacher)
    assert sampler_defaults(student.meta) == (2, 1.0) and sampler_defaults(teacher.meta) == (25, 4.0)
    assert sampler_defaults(student.meta, 5, None) == (5, 1.0)

    def pixels(pipe, **kw):
        images, params = generate_images("a red square", n=2, seed=3, pipeline=pipe, return_params=True, **kw)
        return [torch.from_numpy(np.asarray(im).copy()) for im in images], params

    own, params = pixels(student)
    explicit, _ = pixels(student, steps=2, guidance=1.0)
    other, _ = pixels(student, steps=25, guidance=4.0)
    assert all(torch.equal(a, b) for a, b in zip(own, explicit)) and params[0]["steps"] == 2
    assert not all(torch.equal(a, b) for a, b in zip(own, other))
    ordinary, p2 = pixels(teacher)
    assert all(torch.equal(a, b) for a, b in zip(ordinary, pixels(teacher, steps=25, guidance=4.0)[0]))
    assert p2[0]["steps"] == 25 and p2[0]["guidance"] == 4.0
    r = runner.invoke(app, ["generate", "a red square", "-n", 1, "-c", str(path), "-o", str(tmp_path / "png")])
    assert r.exit_code == 0, r.output
    from PIL import Image

    png = json.loads(Image.open(next((tmp_path / "png").glob("*.png"))).text["incasa"])
    assert png["steps"] == 2 and png["guidance"] == 1.0


@pytest.mark.parametrize("case", ["missing_teacher", "not_dataset", "zero_pairs", "grid_share", "out_is_file",
                                  "not_a_model", "other_data", "foreign_run"])
def test_cli_bad_input_one_line_exit_2(case, teacher, tmp_path):
    data = teacher.parent.parent / "data"
    (tmp_path / "file").write_text("x")
    state = teacher.parent / "train_state.safetensors"
    other = tmp_path / "other"
    other.mkdir()
    (other / "index.json").write_text((data / "index.json").read_text().replace("test-v1", "test-v2"))
    for shard in data.glob("*.tar"):
        (other / shard.name).write_bytes(shard.read_bytes())
    base = ["train", "distill", "--out", str(tmp_path / "run"), "--pairs", "8", "--chunk", "8", "--steps", "1",
            "--teacher-steps", "1"]
    args = {"missing_teacher": ["--teacher", str(tmp_path / "nope.safetensors"), "--data", str(data)],
            "not_dataset": ["--teacher", str(teacher), "--data", str(tmp_path)],
            "zero_pairs": ["--teacher", str(teacher), "--data", str(data), "--pairs", "0"],
            "grid_share": ["--teacher", str(teacher), "--data", str(data), "--grid-share", "2"],
            "out_is_file": ["--teacher", str(teacher), "--data", str(data), "--out", str(tmp_path / "file")],
            "not_a_model": ["--teacher", str(state), "--data", str(data)],
            "other_data": ["--teacher", str(teacher), "--data", str(other)],
            "foreign_run": ["--teacher", str(teacher), "--data", str(data), "--teacher-steps", "2"]}[case]
    if case == "foreign_run":  # the run folder holds pairs drawn with 1 teacher step
        assert runner.invoke(app, base + ["--teacher", str(teacher), "--data", str(data)]).exit_code == 0
    r = runner.invoke(app, base + args)
    assert r.exit_code == 2, r.output
    assert r.output.startswith("Error:") and len(r.output.strip().splitlines()) == 1, r.output


def test_eval_image_uses_the_students_sampler_unless_told(tmp_path):
    """`incasa eval image` on a student: its own steps/guidance by default, the user's when given."""
    from incasa.image.train import TrainConfig, train

    from ..eval.conftest import FIXTURE  # real emoji pictures in the dataset format, matching the shipped judge

    train(TrainConfig(data=str(FIXTURE), out=str(tmp_path / "t"), preset="tiny", text_encoder="hash", steps=10,
                      batch_size=8, warmup=2, sample_every=1000, ckpt_every=1000))
    teacher = tmp_path / "t" / "model.safetensors"
    distill(DistillConfig(data=str(FIXTURE), out=str(tmp_path / "s"), teacher=str(teacher), pairs=8, chunk=8,
                          teacher_steps=2, steps=1, batch_size=4, student_steps=3))
    student = tmp_path / "s" / "model.safetensors"
    for extra, want in (([], (3, 1.0)), (["--steps", "2", "--guidance", "2.5"], (2, 2.5))):
        out = tmp_path / f"eval{len(extra)}"
        r = runner.invoke(app, ["eval", "image", "-c", str(student), "--data", str(FIXTURE), "--num-prompts", "1",
                                "--variants", "2", "--out", str(out), *extra])
        assert r.exit_code == 0, r.output
        [path] = out.glob("eval-*.json")
        config = json.loads(path.read_text())["config"]
        assert (config["steps"], config["guidance"]) == want
