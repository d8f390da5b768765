"""Generation with an image checkpoint: the public functions that the CLI, the server and the arena call.

    pipe = load_pipeline()                                   # the shipped default, or a model.safetensors path
    images = generate_images("a red apple, noto style", n=5, seed=7, pipeline=pipe)

Variant i is drawn from its own generator seeded with seed + i, so any one variant can be regenerated alone.
img2img starts from `init_image` noised to t = strength; inpainting repaints where the mask is white (or, OpenAI
style, fully transparent) and keeps the rest of the init image pixel for pixel. Images are written as PNGs carrying
their parameters twice: a `parameters` text chunk in AUTOMATIC1111's infotext form (readable by the tools people
already use) and an `incasa` chunk with the same facts as JSON.

Latent checkpoints (the 1b / 8b presets, trained with --autoencoder) carry their autoencoder: sampling runs in its
latent space and `Pipeline.decode` turns the result into pixels (incasa/image/latent.py). For large models on a GPU,
`load_pipeline` applies incasa/image/scale.py's treatments on request: bf16 or FP8 weights built block by block, a
memory cap, regional compile, the fastest attention kernel, the text encoder kept on the CPU.

Delivery (`save_images`): the model's 64x64 picture is upscaled (Lanczos) to 512x512 or to the init image's size,
carries an invisible watermark (model + key id, incasa/safety/watermark.py) and a signed C2PA manifest
(incasa/safety/provenance.py; a local development key chain is created on first use). `generate_images` itself
returns the model-size images, for callers that do their own delivery (the arena, the server).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import uuid
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image, PngImagePlugin, UnidentifiedImageError

from incasa import __version__
from incasa.image.autoencoder import Autoencoder
from incasa.image.dit import DiT, DiTConfig
from incasa.image.flow import sample
from incasa.image.latent import PREFIX, latent_mask, sample_size, split_checkpoint
from incasa.image.text_encoder import load_text_encoder
from incasa.train.checkpoint import read_file, read_metadata

DEFAULT_CHECKPOINT = Path(__file__).parent / "default" / "model.safetensors"
# the same model distilled to 4 steps without guidance (incasa/image/distill.py): ~12x fewer network evaluations
DEFAULT_FAST_CHECKPOINT = Path(__file__).parent / "default_fast" / "model.safetensors"
DEFAULT_STEPS, DEFAULT_GUIDANCE = 25, 4.0  # for checkpoints that name no sampler of their own
MAX_INPUT_PIXELS = 4096 * 4096  # refuse decompression bombs before decoding


@dataclass
class Pipeline:
    model: DiT  # or scale.InferenceDiT around a bf16 / FP8 one: float32 in and out either way
    encoder: object
    meta: dict
    device: torch.device
    name: str  # e.g. "incasa-emoji-small"
    weights_hash: str  # first 10 hex digits of the checkpoint's sha256 (A1111's "Model hash")
    autoencoder: Autoencoder | None = None  # latent checkpoints (1b, 8b): pixels <-> what the DiT draws
    sdpa_backend: object | None = None  # the fastest attention kernel measured at load (CUDA), else the default

    @property
    def size(self) -> tuple[int, int]:
        """What the DiT draws: the picture for pixel checkpoints, the latent for latent ones."""
        return sample_size(self.meta)

    @property
    def image_size(self) -> tuple[int, int]:
        """The picture in pixels (before delivery's upscale)."""
        h, w = self.meta["image_size"]
        return int(h), int(w)

    def encode(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """Pixels in [-1, 1] -> the DiT's space (identity for pixel checkpoints)."""
        return x_BCHW if self.autoencoder is None else self.autoencoder.encode(x_BCHW)

    def decode(self, x_BCHW: torch.Tensor) -> torch.Tensor:
        """The DiT's space -> pixels in [-1, 1] (identity for pixel checkpoints)."""
        if self.autoencoder is None:
            return x_BCHW
        # one picture at a time: at 1024^2 each full-resolution activation of the f8c16 decoder (128 channels) is
        # 0.5 GB per picture in float32, and several of them for five pictures would not fit beside the DiT in 12 GB
        return torch.cat([self.autoencoder.decode(z) for z in x_BCHW.split(1)]).clamp(-1, 1)

    def attention(self):
        """Context for sampling: the measured fastest SDPA kernel first, if one was chosen, and the others after it.

        Not the fastest alone: it was timed without a mask, and under guidance the [uncond; cond] text is padded, so
        the mask flash kernels cannot take is there; PyTorch then falls through to the next kernel in the order."""
        if self.sdpa_backend is None:
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel

        rest = (SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH)
        return sdpa_kernel([self.sdpa_backend, *(b for b in rest if b != self.sdpa_backend)], set_priority=True)


DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


def load_pipeline(checkpoint: str | Path | None = None, device: str = "auto", *, dtype: str = "float32",
                  fp8: str | None = None, compile: bool = False, max_memory_gb: float | None = None,
                  offload_text_encoder: bool = False) -> Pipeline:
    """A checkpoint ready to sample. The defaults load it whole in float32 (exact, and what tests compare).

    The options are incasa/image/scale.py's treatments for large presets on a GPU:
      dtype                 "bfloat16" / "float16": the DiT in that precision, built block by block (load_dit)
      fp8                   "row" / "tensor": torchao float8 weights on the blocks' linears (CUDA, compute 8.9+)
      compile               regional torch.compile of the repeated blocks (first call pays the compile)
      max_memory_gb         cap this process's share of the GPU, so "fits in 12 GB" is enforced
      offload_text_encoder  keep the text encoder on the CPU (its features cross once per prompt)
    On CUDA with any of these, the fastest working SDPA kernel for the model's shapes is chosen once.
    """
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    meta = read_metadata(path)
    if meta.get("kind") != "incasa-image-dit":
        raise ValueError(f"{path} is not an incasa image checkpoint (kind={meta.get('kind')!r})")
    if "optim_param_groups" in meta:
        raise ValueError(f"{path} is a resumable training state; generate from {path.parent / 'model.safetensors'}")
    if dtype not in DTYPES:
        raise ValueError(f"unknown dtype {dtype!r}; choose one of {', '.join(DTYPES)}")
    dev = torch.device("cuda" if device == "auto" and torch.cuda.is_available() else ("cpu" if device == "auto" else device))
    if (fp8 or max_memory_gb) and dev.type != "cuda":
        raise ValueError(f"{'--fp8' if fp8 else '--max-memory-gb'} needs a CUDA GPU; the device is {dev}")
    cfg = DiTConfig(**meta["dit"])
    scaled = fp8 is not None or dtype != "float32"
    if max_memory_gb:
        from incasa.image.scale import cap_memory

        cap_memory(max_memory_gb, dev)
    if scaled:  # piece by piece from the file: never the whole float32 model in memory
        from incasa.image.scale import InferenceDiT, load_dit

        # FP8 GEMMs take bf16 activations (torchao's dynamic scaling), so --fp8 alone means bf16 around them
        compute = torch.bfloat16 if fp8 is not None and dtype == "float32" else DTYPES[dtype]
        autoencoder = split_checkpoint(_autoencoder_tensors(path), meta)[1]
        model = InferenceDiT(load_dit(cfg, weights=path, device=dev, dtype=compute, fp8=fp8), compute)
    else:
        tensors, meta = read_file(path)
        dit_tensors, autoencoder = split_checkpoint(tensors, meta)
        model = DiT(cfg)
        try:
            model.load_state_dict({k: v.float() for k, v in dit_tensors.items()})
        except RuntimeError as e:
            raise ValueError(f"{path} does not match its own config: {str(e).splitlines()[0]}") from None
        model.to(dev).eval()
    if compile:
        from incasa.image.scale import compile_blocks

        compile_blocks(model.model if scaled else model)
    encoder = load_text_encoder(meta["text_encoder"]).to("cpu" if offload_text_encoder else dev)
    backend = None
    if dev.type == "cuda" and (scaled or compile):
        from incasa.image.scale import fastest_sdpa_backend

        h, w = sample_size(meta)
        seq = (h // cfg.patch_size) * (w // cfg.patch_size) + 32  # image tokens + a typical prompt
        backend, _ = fastest_sdpa_backend(10, cfg.num_heads, seq, cfg.width // cfg.num_heads, device=dev,
                                          dtype=model.dtype if scaled else torch.float32)
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    name = meta.get("name") or f"incasa-{meta.get('preset', 'dit')}"
    return Pipeline(model, encoder, meta, dev, name, digest,
                    autoencoder.to(dev) if autoencoder is not None else None, backend)


def _autoencoder_tensors(path: Path) -> dict[str, torch.Tensor]:
    """Only the autoencoder's tensors of a checkpoint (the DiT's are read piece by piece by load_dit)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        return {k: f.get_tensor(k) for k in f.keys() if k.startswith(PREFIX)}


def sampler_defaults(meta: dict, steps: int | None = None, guidance: float | None = None) -> tuple[int, float]:
    """Steps and guidance: the caller's, else the checkpoint's own (a distilled student records e.g. 4 steps and
    guidance 1.0 = no classifier-free guidance, under "sampler"), else 25 steps with guidance 4.0."""
    own = meta.get("sampler") or {}
    return (int(steps if steps is not None else own.get("steps", DEFAULT_STEPS)),
            float(guidance if guidance is not None else own.get("guidance", DEFAULT_GUIDANCE)))


def read_image(path: Path, what: str, keep_alpha: bool = False) -> Image.Image:
    """Open a user-supplied image with a clear error for missing, non-image, truncated or enormous files."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{what}: {path} does not exist")
    try:
        with Image.open(path) as img:
            if img.width * img.height > MAX_INPUT_PIXELS:
                raise ValueError(f"{what}: {path} is {img.width}x{img.height}, larger than we accept")
            img.load()
            if keep_alpha:  # masks: keep transparency if there is any, else grey levels
                has_alpha = "A" in img.getbands() or "transparency" in img.info
                return img.convert("RGBA") if has_alpha else img.convert("L")
            return img.convert("RGB")
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError) as e:
        raise ValueError(f"{what}: {path} is not a readable image ({e.__class__.__name__})") from None


def mask_to_tensor(mask: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    """[1, 1, H, W] in {0, 1}, 1 = repaint. RGBA: fully transparent pixels (OpenAI); otherwise white pixels."""
    if mask.mode == "RGBA":
        m = Image.eval(mask.getchannel("A"), lambda a: 255 if a == 0 else 0)
    else:
        m = mask.convert("L").point(lambda v: 255 if v > 127 else 0)
    m = m.resize((size[1], size[0]), Image.NEAREST)
    return torch.frombuffer(bytearray(m.tobytes()), dtype=torch.uint8).view(1, 1, size[0], size[1]).float() / 255


def to_tensor(img: Image.Image, size: tuple[int, int]) -> torch.Tensor:
    img = img.convert("RGB").resize((size[1], size[0]), Image.LANCZOS)
    x = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8).view(size[0], size[1], 3)
    return x.permute(2, 0, 1)[None].float() / 127.5 - 1  # [1, 3, H, W] in [-1, 1]


def to_pil(x_CHW: torch.Tensor) -> Image.Image:
    x = ((x_CHW.clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).cpu().contiguous()
    return Image.frombytes("RGB", (x.shape[1], x.shape[0]), bytes(x.numpy().tobytes()))


@torch.no_grad()
def generate_images(prompt: str, *, n: int = 5, seed: int = 0, steps: int | None = None,
                    guidance: float | None = None, checkpoint: str | Path | None = None,
                    pipeline: Pipeline | None = None, init_image: Image.Image | None = None, strength: float = 1.0,
                    mask: Image.Image | None = None, return_params: bool = False, backend: str = "torch",
                    onnx_dir: str | Path | None = None):
    """steps / guidance None: the checkpoint's own sampler defaults (`sampler_defaults`).
    backend "onnx": the DiT runs in ONNX Runtime from `onnx_dir` (incasa export onnx of the same checkpoint);
    the text encoder and the sampler stay in PyTorch (incasa/image/onnx_backend.py)."""
    if not prompt or not prompt.strip():
        raise ValueError("the prompt is empty")
    if mask is not None and init_image is None:
        raise ValueError("inpainting needs an init image as well as a mask")
    if init_image is not None and mask is not None and init_image.size != mask.size:
        raise ValueError(f"the mask is {mask.size[0]}x{mask.size[1]} but the image is "
                         f"{init_image.size[0]}x{init_image.size[1]}; they must be the same size")
    if backend not in ("torch", "onnx") or (backend == "onnx") != (onnx_dir is not None):
        raise ValueError(f"backend must be 'torch', or 'onnx' with an onnx_dir; got {backend!r}, onnx_dir={onnx_dir}")
    pipe = pipeline or load_pipeline(checkpoint)
    steps, guidance = sampler_defaults(pipe.meta, steps, guidance)
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    dev, (H, W), (Hp, Wp) = pipe.device, pipe.size, pipe.image_size
    model = pipe.model
    if backend == "onnx":
        from incasa.image.onnx_backend import load_onnx_dit

        model = load_onnx_dit(onnx_dir, expect_hash=pipe.weights_hash)
    C = pipe.model.cfg.in_channels
    noise = torch.cat([torch.randn(1, C, H, W, generator=torch.Generator().manual_seed(seed + i)) for i in range(n)])
    cond = {k: v.expand(n, *v.shape[1:]).to(dev) for k, v in pipe.encoder.encode([prompt]).items()}
    uncond = {k: v.expand(n, *v.shape[1:]).to(dev) for k, v in pipe.encoder.encode([""]).items()}
    # pixels for the final paste; the DiT's space (latents, for latent checkpoints) for sampling
    init_px = to_tensor(init_image, (Hp, Wp)).expand(n, -1, -1, -1).to(dev) if init_image is not None else None
    m_px = mask_to_tensor(mask, (Hp, Wp)).to(dev) if mask is not None else None
    init = pipe.encode(init_px) if init_px is not None else None
    m = latent_mask(m_px, Hp // H) if m_px is not None else None
    with pipe.attention():
        x = sample(model, noise.to(dev), cond, uncond, steps=steps, guidance=guidance, init=init,
                   strength=strength if m is None else 1.0, mask=m)
    x = model.decoder(x) if getattr(model, "decoder", None) is not None else pipe.decode(x)  # ONNX: its own
    if m_px is not None:  # paste back only the repainted region; the rest is the init image, untouched
        x = m_px * x + (1 - m_px) * init_px
    images = [to_pil(xi) for xi in x]
    mode = "inpaint" if m is not None else ("img2img" if init is not None else "txt2img")
    params = [{"prompt": prompt, "seed": seed + i, "steps": steps, "guidance": guidance, "size": f"{Wp}x{Hp}",
               "sampler": "Euler (rectified flow)", "model": pipe.name, "model_hash": pipe.weights_hash,
               "mode": mode, "strength": strength if mode == "img2img" else None, "incasa_version": __version__}
              for i in range(n)]
    return (images, params) if return_params else images


def infotext(p: dict) -> str:
    """AUTOMATIC1111's `parameters` form: the prompt, then one line of 'Key: value' pairs."""
    fields = [("Steps", p["steps"]), ("Sampler", p["sampler"]), ("CFG scale", p["guidance"]), ("Seed", p["seed"]),
              ("Size", p["size"]), ("Model hash", p["model_hash"]), ("Model", p["model"])]
    if p.get("strength") is not None:
        fields.append(("Denoising strength", p["strength"]))
    if p.get("output_size"):
        fields.append(("Upscaled to", p["output_size"]))
    fields.append(("Version", f"incasa {p['incasa_version']}"))
    return p["prompt"] + "\n" + ", ".join(f"{k}: {v}" for k, v in fields)


def png_bytes(img: Image.Image, params: dict) -> bytes:
    import io

    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", infotext(params))
    info.add_text("incasa", json.dumps(params, ensure_ascii=False))
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def check_writable(out: Path) -> None:
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PermissionError(f"cannot create output folder {out}: {e.strerror}") from None
    if not out.is_dir() or not os.access(out, os.W_OK):
        raise PermissionError(f"output folder {out} is not writable")


def _png(img: Image.Image) -> bytes:
    import io

    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def finish_image(img: Image.Image, params: dict, *, init_image: Image.Image | None = None,
                 mask: Image.Image | None = None, size: int = 512, watermark_payload: bytes | None = None):
    """Model-size image -> the delivered picture: upscaled (to the init image's size for edits, else size x size),
    invisibly watermarked, and for inpainting composited so that the kept region is the original, pixel for pixel.

    The watermark needs >= watermark.MIN_SIDE (128) px and survives the common edits from 256 px up (see
    incasa/safety/watermark.py and benchmarks/results/watermark.json); for inpainting it is applied to the repainted
    region only, because the promise "the rest stays as it was" outranks a mark on pixels we did not make.
    """
    from incasa.safety import watermark

    target = init_image.size if init_image is not None else (size, size)
    out = img.resize(target, Image.LANCZOS)
    marked = watermark_payload is not None and min(target) >= watermark.MIN_SIDE
    if marked:
        out = watermark.embed(out, watermark_payload)
    if mask is not None:
        repaint = mask_to_tensor(mask, (target[1], target[0]))[0, 0].mul(255).byte().numpy()
        out = Image.composite(out, init_image.convert("RGB"), Image.fromarray(repaint, "L"))
    return out, {**params, "output_size": f"{target[0]}x{target[1]}", "watermark": marked}


def save_images(images: list[Image.Image], params: list[dict], out: Path, *, keys_dir: Path | None = None,
                init_image: Image.Image | None = None, mask: Image.Image | None = None, size: int = 512) -> list[Path]:
    """Finish, sign (C2PA) and write each image atomically; returns the paths. Dev keys are created on first use."""
    from incasa.safety import provenance, watermark

    check_writable(out)
    keys = provenance.ensure_dev_keys(keys_dir)
    model = params[0]["model"]
    payload = watermark.make_payload(f"{model} {params[0]['model_hash']}", provenance.key_id(keys))
    ingredient = _png(init_image) if init_image is not None else None
    stem = re.sub(r"[^a-z0-9]+", "-", params[0]["prompt"].lower()).strip("-")[:60] or "image"
    paths = []
    for img, p in zip(images, params, strict=True):
        final, p = finish_image(img, p, init_image=init_image, mask=mask, size=size, watermark_payload=payload)
        data = provenance.sign_image(png_bytes(final, p), "png", title=f"{stem}_seed{p['seed']}.png", model=model,
                                     model_version=p["model_hash"], parameters=p, ingredient=ingredient,
                                     keys_dir=keys)
        path = out / f"{stem}_seed{p['seed']}.png"
        tmp = out / f".{path.name}.{uuid.uuid4().hex}.tmp"  # not mkstemp: its 0600 mode would stick to the image
        with open(tmp, "xb") as f:
            f.write(data)
        os.replace(tmp, path)
        paths.append(path)
    return paths
