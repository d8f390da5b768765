"""Latent-space checkpoints (the 1b / 8b presets' path, here with tiny models): training on frozen autoencoder
latents, one self-contained checkpoint, generation / edits / serving that decode to pixels, and clear refusals."""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from incasa.cli import app
from incasa.image.autoencoder import AETrainConfig, train_autoencoder
from incasa.image.generate import generate_images, load_pipeline
from incasa.image.latent import PREFIX
from incasa.image.train import TrainConfig, train
from incasa.train.checkpoint import read_file

from ..conftest import make_dataset


@pytest.fixture(scope="module")
def latent_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent")
    data = make_dataset(root / "data", num=8, size=32)
    train_autoencoder(AETrainConfig(data=str(data), out=str(root / "ae"), preset="tiny", steps=40, batch_size=4,
                                    lr=3e-3, warmup=1, log_every=10, sample_every=1000, ckpt_every=1000,
                                    device="cpu"))
    ae_path = root / "ae" / "model.safetensors"
    cfg = TrainConfig(data=str(data), out=str(root / "dit"), preset="tiny", text_encoder="hash",
                      autoencoder=str(ae_path), steps=6, batch_size=4, warmup=2, sample_every=6, ckpt_every=3,
                      log_every=1, device="cpu")
    result = train(cfg)
    return root, data, ae_path, cfg, result


def test_checkpoint_carries_the_autoencoder(latent_run):
    root, _, ae_path, _, _ = latent_run
    tensors, meta = read_file(root / "dit" / "model.safetensors")
    ae_tensors, ae_meta = read_file(ae_path)
    assert meta["image_size"] == [32, 32] and meta["sample_size"] == [16, 16]  # tiny autoencoder: factor 2
    assert meta["dit"]["in_channels"] == ae_meta["ae"]["latent_channels"] == 4
    assert meta["autoencoder"]["factor"] == 2 and len(meta["autoencoder"]["sha256"]) == 10
    for k, v in ae_tensors.items():  # the same weights, under the prefix
        assert torch.equal(tensors[PREFIX + k], v.half())
    assert (root / "dit" / "samples" / "step_0000006.png").exists()  # the grid is decoded to pixels
    grid = Image.open(root / "dit" / "samples" / "step_0000006.png")
    assert grid.size == (8 * 32 * 2, 32 * 2)


def test_resume_is_exact_and_checks_the_autoencoder(latent_run, tmp_path):
    root, data, ae_path, cfg, result = latent_run
    first = train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "b"), "steps": 3}))
    rest = train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "b"), "steps": 6}))
    assert first["losses"] + rest["losses"] == result["losses"]
    # another autoencoder (other weights) cannot continue this run
    train_autoencoder(AETrainConfig(data=str(data), out=str(tmp_path / "ae2"), preset="tiny", steps=2, batch_size=4,
                                    warmup=1, sample_every=1000, ckpt_every=1000, device="cpu"))
    with pytest.raises(ValueError, match="another model"):
        train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "b"), "steps": 8,
                             "autoencoder": str(tmp_path / "ae2" / "model.safetensors")}))


def test_generation_decodes_to_pixels_and_edits_keep_the_rest(latent_run):
    root = latent_run[0]
    pipe = load_pipeline(root / "dit" / "model.safetensors", device="cpu")
    assert pipe.size == (16, 16) and pipe.image_size == (32, 32) and pipe.autoencoder is not None
    a, params = generate_images("a red square", n=2, seed=3, steps=3, pipeline=pipe, return_params=True)
    b = generate_images("a red square", n=2, seed=3, steps=3, pipeline=pipe)
    assert a[0].size == (32, 32) and params[0]["size"] == "32x32"
    assert np.array_equal(np.asarray(a[1]), np.asarray(b[1]))  # deterministic per seed
    assert not np.array_equal(np.asarray(a[0]), np.asarray(a[1]))
    init = Image.new("RGB", (32, 32), (10, 200, 30))
    mask = Image.new("L", (32, 32), 0)
    mask.paste(255, (0, 0, 16, 32))  # repaint the left half
    out = np.asarray(generate_images("a blue square", n=1, steps=3, pipeline=pipe, init_image=init, mask=mask)[0])
    assert (out[:, 16:] == np.asarray(init)[:, 16:]).all()  # the kept half is the original, pixel for pixel
    assert not (out[:, :16] == np.asarray(init)[:, :16]).all()
    img2img = generate_images("a blue square", n=1, steps=4, pipeline=pipe, init_image=init, strength=0.5)[0]
    assert img2img.size == (32, 32)


def test_serving_batches_decode_like_generate(latent_run):
    from incasa.serve.engines import ImageJob, generate_batch

    pipe = load_pipeline(latent_run[0] / "dit" / "model.safetensors", device="cpu")
    jobs = [ImageJob("a red square", n=1, seed=5, steps=3), ImageJob("a green square", n=2, seed=9, steps=3)]
    rendered = generate_batch(pipe, jobs)
    alone = generate_images("a green square", n=2, seed=9, steps=3, pipeline=pipe)
    assert rendered[1].images[0].size == (32, 32) and rendered[1].params[0]["size"] == "32x32"
    diff = np.abs(np.asarray(rendered[1].images[1], float) - np.asarray(alone[1], float))
    assert diff.max() <= 2  # the same picture; padding the batch's prompts to one length moves a pixel by a step


def test_reduced_precision_pipeline_matches_float32(tiny_checkpoint):
    full = load_pipeline(tiny_checkpoint, device="cpu")
    half = load_pipeline(tiny_checkpoint, device="cpu", dtype="bfloat16")
    assert next(half.model.model.parameters()).dtype == torch.bfloat16
    a = np.asarray(generate_images("a red square", n=1, seed=1, steps=4, pipeline=full)[0], float)
    b = np.asarray(generate_images("a red square", n=1, seed=1, steps=4, pipeline=half)[0], float)
    assert 10 * np.log10(255 ** 2 / max(((a - b) ** 2).mean(), 1e-9)) > 25  # bf16 weights: close, not equal
    with pytest.raises(ValueError, match="needs a CUDA GPU"):
        load_pipeline(tiny_checkpoint, device="cpu", fp8="row")
    with pytest.raises(ValueError, match="unknown dtype"):
        load_pipeline(tiny_checkpoint, device="cpu", dtype="int8")


def test_refusals(latent_run, tmp_path):
    root, data, ae_path, _, _ = latent_run
    with pytest.raises(ValueError, match="train an autoencoder first"):  # before any data is read
        train(TrainConfig(data=str(tmp_path / "nothing"), out=str(tmp_path / "o"), preset="1b"))
    with pytest.raises(ValueError, match="not an autoencoder"):
        train(TrainConfig(data=str(data), out=str(tmp_path / "o"), preset="tiny",
                          autoencoder=str(root / "dit" / "model.safetensors")))
    r = CliRunner().invoke(app, ["train", "image", "--data", str(data), "--out", str(tmp_path / "c"),
                                 "--preset", "8b"])
    assert r.exit_code == 2 and "--autoencoder" in r.output and "Traceback" not in r.output
    r = CliRunner().invoke(app, ["generate", "a red square", "-o", str(tmp_path / "g"), "--fp8", "row",
                                 "--device", "cpu", "-c", str(root / "dit" / "model.safetensors")])
    assert r.exit_code == 2 and "needs a CUDA GPU" in r.output
    r = CliRunner().invoke(app, ["generate", "a red square", "-o", str(tmp_path / "g"), "--dtype", "int4"])
    assert r.exit_code == 2 and "--dtype" in r.output


def test_onnx_export_carries_the_decoder_and_matches_torch(latent_run, tmp_path):
    pytest.importorskip("onnxruntime", reason="the export extra is not installed: pip install -e '.[export]'")
    import json

    from incasa.image.onnx_backend import export_onnx

    ckpt = latent_run[0] / "dit" / "model.safetensors"
    out = export_onnx(ckpt, tmp_path / "onnx")
    meta = json.loads((out / "incasa_onnx.json").read_text())
    assert meta["decoder"] == "decoder.onnx" and (out / "decoder.onnx").is_file() and meta["pixel_size"] == [32, 32]
    pipe = load_pipeline(ckpt, device="cpu")
    ref = np.asarray(generate_images("a red square", n=2, seed=4, steps=3, pipeline=pipe)[1], float)
    got = np.asarray(generate_images("a red square", n=2, seed=4, steps=3, pipeline=pipe, backend="onnx",
                                     onnx_dir=out)[1], float)
    assert got.shape == (32, 32, 3)
    assert 10 * np.log10(255 ** 2 / max(((ref - got) ** 2).mean(), 1e-9)) >= 40  # the parity bar


def test_diffusers_export_carries_the_autoencoder_and_reproduces_generate(latent_run, tmp_path, monkeypatch):
    pytest.importorskip("diffusers", reason="the export extra is not installed: pip install -e '.[export]'")
    import json

    from diffusers import DiffusionPipeline
    from diffusers.utils import dynamic_modules_utils

    from incasa.image.export import export_diffusers

    monkeypatch.setattr(dynamic_modules_utils, "HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    root, data, ae_path, cfg, _ = latent_run
    # the diffusers pipeline encodes prompts with MiniLM: a short latent run with that encoder
    minilm = train(TrainConfig(**{**cfg.__dict__, "out": str(tmp_path / "m"), "text_encoder": "minilm",
                                  "steps": 2, "sample_every": 100}))
    ckpt = tmp_path / "m" / "model.safetensors"
    out = export_diffusers(ckpt, tmp_path / "d")
    assert minilm["step"] == 2
    index = json.loads((out / "model_index.json").read_text())
    assert index["vae"] == ["incasa.image.export", "IncasaAutoencoderModel"]
    assert "latent space" in (out / "README.md").read_text().lower()
    pipe = DiffusionPipeline.from_pretrained(out, trust_remote_code=True)
    pipe.set_progress_bar_config(disable=True)
    ours = generate_images("a red square", n=2, seed=3, steps=3, guidance=4.0,
                           pipeline=load_pipeline(ckpt, device="cpu"))
    theirs = pipe("a red square", num_images_per_prompt=2, num_inference_steps=3, guidance_scale=4.0,
                  generator=[torch.Generator().manual_seed(3 + i) for i in range(2)]).images
    assert [im.size for im in theirs] == [(32, 32)] * 2
    a = np.stack([np.asarray(x, float) for x in ours])
    b = np.stack([np.asarray(x, float) for x in theirs])
    assert 10 * np.log10(255 ** 2 / max(((a - b) ** 2).mean(), 1e-9)) >= 40


def test_distilling_a_latent_teacher_gives_a_latent_student(latent_run, tmp_path):
    from incasa.image.distill import FEW_STEPS, DistillConfig, distill

    root, data = latent_run[0], latent_run[1]
    distill(DistillConfig(data=str(data), out=str(tmp_path / "s"), teacher=str(root / "dit" / "model.safetensors"),
                          pairs=16, chunk=8, teacher_steps=3, steps=3, batch_size=4, warmup=1, val_pairs=4,
                          log_every=1, sample_every=3, ckpt_every=100, device="cpu"))
    tensors, meta = read_file(tmp_path / "s" / "model.safetensors")
    teacher_tensors, _ = read_file(root / "dit" / "model.safetensors")
    assert meta["sample_size"] == [16, 16] and meta["autoencoder"]["factor"] == 2
    assert all(torch.equal(tensors[k], teacher_tensors[k]) for k in teacher_tensors if k.startswith(PREFIX))
    rows = 1 + len(FEW_STEPS)  # the teacher's pictures, then the student at each step count, decoded to pixels
    assert Image.open(tmp_path / "s" / "samples" / "step_0000003.png").size[1] == rows * 32 * 2
    student = load_pipeline(tmp_path / "s" / "model.safetensors", device="cpu")
    assert generate_images("a red square", n=1, pipeline=student)[0].size == (32, 32)


def test_chosen_attention_kernel_falls_through_for_masked_text():
    """The fastest kernel is timed without a mask; under guidance the padded text needs one (flash takes none)."""
    from torch.nn.attention import SDPBackend
    from torch.nn.functional import scaled_dot_product_attention

    from incasa.image.generate import Pipeline

    pipe = Pipeline(None, None, {"image_size": [8, 8]}, torch.device("cpu"), "x", "0", None,
                    SDPBackend.FLASH_ATTENTION)
    q = torch.randn(2, 2, 5, 8, generator=torch.Generator().manual_seed(0))
    mask = torch.tensor([[True] * 4 + [False]] * 2)[:, None, None, :]
    with pipe.attention():
        out = scaled_dot_product_attention(q, q, q, attn_mask=mask)
    assert torch.allclose(out, scaled_dot_product_attention(q, q, q, attn_mask=mask), atol=1e-6)
