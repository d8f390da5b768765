"""Command-line entry points of the image model: `incasa generate`, `incasa train image`, `incasa data emoji`.

Only typer is imported at module level; torch and the model load inside the commands. Expected failures (bad
input, missing files) become one red line on stderr and exit code 2 — never a traceback.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

train_app = typer.Typer(no_args_is_help=True)
data_app = typer.Typer(no_args_is_help=True)


def fail(message: str, code: int = 2):
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def generate(
    prompt: str = typer.Argument(..., help="What to draw, e.g. 'a red apple, noto style'. Styles the default knows: "
                                           "noto, twemoji, fluent, openmoji."),
    n: int = typer.Option(5, "-n", "--n", help="Number of variants (1-16)."),
    seed: int = typer.Option(0, "--seed", help="Seed of the first variant; variant i uses seed + i."),
    out: Path = typer.Option(Path("out"), "-o", "--out", help="Output folder (created if missing)."),
    steps: Optional[int] = typer.Option(None, "--steps", help="Euler steps of the rectified-flow sampler "
                                                               "(default: the checkpoint's own, else 25)."),
    guidance: Optional[float] = typer.Option(None, "--guidance", help="Classifier-free guidance scale, 1 = off "
                                                                     "(default: the checkpoint's own, else 4.0)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", "-c",
                                              help="A model.safetensors from `incasa train image` (default: shipped)."),
    fast: bool = typer.Option(False, "--fast", help="Use the shipped 4-step student distilled from the default "
                                                    "(~12x faster on CPU, same prompt fidelity on our eval suite)."),
    init_image: Optional[Path] = typer.Option(None, "--init-image", help="Start from this image (img2img / inpaint)."),
    strength: float = typer.Option(0.7, "--strength", help="img2img: how far to re-noise the init image (0-1]."),
    mask: Optional[Path] = typer.Option(None, "--mask", help="Inpainting mask, same size as --init-image: white (or "
                                                             "transparent) = repaint, black = keep."),
    size: int = typer.Option(512, "--size", help="Output size in pixels (the model's image is upscaled; the invisible "
                                                 "watermark is embedded from 128 px and survives common edits from "
                                                 "256). Edits keep the init image's size."),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    backend: str = typer.Option("torch", "--backend", help="torch, or onnx: the DiT runs in ONNX Runtime from "
                                                           "--onnx-dir (text encoder and sampler stay in PyTorch)."),
    onnx_dir: Optional[Path] = typer.Option(None, "--onnx-dir", help="Folder from `incasa export onnx` of the same "
                                                                     "checkpoint (with --backend onnx)."),
    dtype: str = typer.Option("float32", "--dtype", help="Precision of the DiT: float32 (exact), bfloat16 or "
                                                        "float16 (half the memory; built block by block).",
                              rich_help_panel="Large models (GPU)"),
    fp8: Optional[str] = typer.Option(None, "--fp8", help="row or tensor: float8 weights on the blocks' linears "
                                                         "(torchao; CUDA GPU of compute capability 8.9+).",
                                      rich_help_panel="Large models (GPU)"),
    compile_blocks: bool = typer.Option(False, "--compile", help="torch.compile each repeated block (regional "
                                                                 "compile): faster sampling after a slow first call.",
                                        rich_help_panel="Large models (GPU)"),
    max_memory_gb: Optional[float] = typer.Option(None, "--max-memory-gb", help="Refuse to use more than this much "
                                                  "GPU memory (e.g. 12).", rich_help_panel="Large models (GPU)"),
    offload_text_encoder: bool = typer.Option(False, "--offload-text-encoder", help="Keep the text encoder on the "
                                              "CPU.", rich_help_panel="Large models (GPU)"),
) -> None:
    """Generate N variants of a prompt as PNGs that carry their generation parameters, an invisible watermark and
    signed C2PA content credentials. Prompts are checked against the safety policy first (refusal: exit code 3)."""
    from incasa.image import generate as gen
    from incasa.safety import policy as guard
    from incasa.safety.cli import resolve_audit_log, resolve_keys_dir

    if not prompt.strip():
        fail("the prompt is empty; describe what to draw, e.g. 'a red apple, noto style'")
    if not 1 <= n <= 16:
        fail(f"-n must be between 1 and 16, got {n}")
    if steps is not None and not 1 <= steps <= 1000:
        fail(f"--steps must be between 1 and 1000, got {steps}")
    if mask is not None and init_image is None:
        fail("--mask needs --init-image (the picture to repaint)")
    if fast and checkpoint is not None:
        fail("--fast picks the shipped 4-step student; leave it out when you give --checkpoint")
    if not 64 <= size <= 2048:
        fail(f"--size must be between 64 and 2048, got {size}")
    if backend not in ("torch", "onnx") or (backend == "onnx") != (onnx_dir is not None):
        fail(f"--backend must be torch, or onnx together with --onnx-dir; got --backend {backend}"
             + (f" --onnx-dir {onnx_dir}" if onnx_dir else ""))
    if dtype not in ("float32", "bfloat16", "float16"):
        fail(f"--dtype must be float32, bfloat16 or float16, got {dtype}")
    if fp8 is not None and fp8 not in ("row", "tensor"):
        fail(f"--fp8 must be row or tensor, got {fp8}")
    if max_memory_gb is not None and max_memory_gb <= 0:
        fail(f"--max-memory-gb must be positive, got {max_memory_gb}")
    if backend == "onnx" and (fp8 or dtype != "float32" or compile_blocks):
        fail("--dtype, --fp8 and --compile apply to the PyTorch backend, not to --backend onnx")
    try:
        rules = guard.load_policy(None)
        decision = guard.check_prompt(prompt, rules)
        guard.audit(decision, prompt, resolve_audit_log(None), keep_raw=rules.keep_raw, source="generate")
    except (ValueError, OSError) as e:
        fail(f"safety policy: {e}")
    if decision.action == "block":
        fail(f"refused by the content policy ({decision.category}): {decision.reason}", code=guard.POLICY_EXIT_CODE)
    if decision.action == "warn":
        typer.secho(f"Warning: {decision.category}: {decision.reason}", fg=typer.colors.YELLOW, err=True)
    try:
        gen.check_writable(out)
        init = gen.read_image(init_image, "--init-image") if init_image else None
        mask_img = gen.read_image(mask, "--mask", keep_alpha=True) if mask else None
        pipe = gen.load_pipeline(gen.DEFAULT_FAST_CHECKPOINT if fast else checkpoint, device=device, dtype=dtype,
                                 fp8=fp8, compile=compile_blocks, max_memory_gb=max_memory_gb,
                                 offload_text_encoder=offload_text_encoder)
        images, params = gen.generate_images(prompt, n=n, seed=seed, steps=steps, guidance=guidance, pipeline=pipe,
                                             init_image=init, strength=strength if init is not None and mask is None else 1.0,
                                             mask=mask_img, return_params=True, backend=backend,
                                             onnx_dir=onnx_dir)
        paths = gen.save_images(images, params, out, keys_dir=resolve_keys_dir(None), init_image=init,
                                mask=mask_img, size=size)
    except (ValueError, FileNotFoundError, PermissionError, RuntimeError) as e:
        fail(str(e))
    for p in paths:
        typer.echo(str(p))


@train_app.command("image")
def train_image(
    data: Path = typer.Option(..., "--data", help="Dataset folder written by `incasa data emoji`."),
    out: Path = typer.Option(..., "--out", help="Run folder; re-running with the same folder resumes."),
    preset: str = typer.Option("small", "--preset", help="DiT size: tiny, small, medium, base, 1b, 8b."),
    text_encoder: str = typer.Option("minilm", "--text-encoder", help="minilm (default), hf:/local/dir, or hash."),
    autoencoder: Optional[Path] = typer.Option(None, "--autoencoder", help="model.safetensors of `incasa train "
                                               "autoencoder`: train in its latent space (needed by the 1b and 8b "
                                               "presets; optional for the others). Its weights go into the "
                                               "checkpoint."),
    steps: int = typer.Option(20000, "--steps", help="Optimizer steps in total."),
    batch_size: int = typer.Option(64, "--batch-size"),
    lr: float = typer.Option(3e-4, "--lr", help="Peak learning rate (warmup, then cosine)."),
    warmup: int = typer.Option(500, "--warmup"),
    ema_decay: float = typer.Option(0.999, "--ema-decay"),
    cfg_dropout: float = typer.Option(0.1, "--cfg-dropout", help="Share of captions dropped for guidance."),
    styles: str = typer.Option("", "--styles", help="Comma-separated styles to train on (default: all)."),
    groups: str = typer.Option("", "--groups", help="Comma-separated emoji groups (default: all), e.g. food-drink."),
    sample_every: int = typer.Option(1000, "--sample-every", help="Save a sample grid PNG every N steps."),
    ckpt_every: int = typer.Option(500, "--ckpt-every", help="Save the resumable state every N steps."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    max_minutes: float = typer.Option(0.0, "--max-minutes", help="Stop cleanly after this many minutes (state "
                                                                 "saved, weights exported); 0 = no limit. Re-run "
                                                                 "the same command to resume."),
) -> None:
    """Train the text-to-image DiT from scratch with rectified flow (resumes if --out has a state)."""
    from incasa.image.train import TrainConfig, train

    if steps < 1 or batch_size < 1:
        fail("--steps and --batch-size must be positive")
    if max_minutes < 0:
        fail("--max-minutes must be >= 0")
    cfg = TrainConfig(data=str(data), out=str(out), preset=preset, text_encoder=text_encoder,
                      autoencoder=str(autoencoder or ""), steps=steps,
                      batch_size=batch_size, lr=lr, warmup=warmup, ema_decay=ema_decay, cfg_dropout=cfg_dropout,
                      styles=styles, groups=groups, sample_every=sample_every, ckpt_every=ckpt_every, seed=seed,
                      device=device, max_seconds=max_minutes * 60)
    try:
        result = train(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(str(e))
    typer.echo(f"trained to step {result['step']}: {out / 'model.safetensors'}")


@train_app.command("autoencoder")
def train_autoencoder_cmd(
    data: Path = typer.Option(..., "--data", help="Dataset folder written by `incasa data emoji`."),
    out: Path = typer.Option(..., "--out", help="Run folder; re-running with the same folder resumes."),
    preset: str = typer.Option("emoji", "--preset", help="tiny, emoji (64px -> 16x16x4) or f8c16 (/8, 16 "
                                                         "channels: the latent space of the 1b and 8b DiTs)."),
    steps: int = typer.Option(4000, "--steps", help="Optimizer steps in total."),
    batch_size: int = typer.Option(32, "--batch-size"),
    lr: float = typer.Option(4e-4, "--lr", help="Peak learning rate (warmup, then cosine)."),
    warmup: int = typer.Option(200, "--warmup"),
    kl_weight: float = typer.Option(1e-6, "--kl-weight", help="Weight of the KL term that keeps latents bounded."),
    groups: str = typer.Option("", "--groups", help="Comma-separated emoji groups (default: all)."),
    sample_every: int = typer.Option(500, "--sample-every", help="Save a reconstruction grid PNG every N steps."),
    ckpt_every: int = typer.Option(250, "--ckpt-every", help="Save the resumable state every N steps."),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto, cpu or cuda."),
    max_minutes: float = typer.Option(0.0, "--max-minutes", help="Stop cleanly after this many minutes; 0 = no "
                                                                 "limit. Re-run the same command to resume."),
) -> None:
    """Train the convolutional autoencoder whose latent space the larger DiT presets use (L1 + MSE + a small KL;
    no pretrained perceptual network). Writes model.safetensors with the latent scale and the reconstruction PSNR."""
    from incasa.image.autoencoder import AETrainConfig, train_autoencoder

    if steps < 1 or batch_size < 1 or max_minutes < 0:
        fail("--steps and --batch-size must be positive and --max-minutes >= 0")
    cfg = AETrainConfig(data=str(data), out=str(out), preset=preset, steps=steps, batch_size=batch_size, lr=lr,
                        warmup=warmup, kl_weight=kl_weight, groups=groups, sample_every=sample_every,
                        ckpt_every=ckpt_every, seed=seed, device=device, max_seconds=max_minutes * 60)
    try:
        result = train_autoencoder(cfg)
    except (ValueError, FileNotFoundError, RuntimeError) as e:
        fail(str(e))
    typer.echo(f"trained to step {result['step']}: {out / 'model.safetensors'} "
               f"(reconstruction PSNR on training images {result['train_psnr_db']:.1f} dB)")


@data_app.command("emoji")
def data_emoji(
    out: Path = typer.Argument(..., help="Output folder for the WebDataset shards and index.json."),
    size: int = typer.Option(64, "--size", help="Image size in pixels (square)."),
    styles: str = typer.Option("noto,twemoji,fluent,openmoji", "--styles", help="Comma-separated emoji sets."),
    cache_dir: Path = typer.Option(Path.home() / ".cache" / "incasa" / "npm", "--cache-dir",
                                   help="Where the npm tarballs are kept between runs."),
) -> None:
    """Build the captioned emoji training set from the open emoji artwork on the npm registry."""
    from rich.progress import Progress

    from incasa.image.data import STYLES, build_emoji_dataset

    chosen = tuple(s for s in styles.split(",") if s)
    if not chosen or set(chosen) - set(STYLES):
        fail(f"--styles must be a comma-separated subset of {','.join(STYLES)}, got {styles!r}")
    try:
        with Progress() as progress:
            index = build_emoji_dataset(out, cache_dir, size=size, styles=chosen, progress=progress)
    except (ValueError, RuntimeError, OSError) as e:
        fail(str(e))
    total = {split: sum(c.values()) for split, c in index["counts"].items()}
    typer.echo(f"{out}: {total} images, data version {index['data_version']}")

