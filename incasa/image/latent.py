"""Latent space for the DiT: the frozen autoencoder between pictures and what the larger presets draw.

The pixel presets (tiny ... base) draw RGB directly. `1b` and `8b` draw the latents of an autoencoder trained
in-house (incasa/image/autoencoder.py, `incasa train autoencoder`), as FLUX and SD3 do: with the f8c16 autoencoder a
1024^2 picture is a 128^2 x 16 latent, 4,096 tokens at patch 2. This module is the glue that lets training,
generation and serving treat both kinds alike:

  training    every training image is encoded once by the frozen encoder (the posterior mean, scaled to unit
              variance) and cached beside the run, so the loop, the loss and the resume are those of pixel training;
              the DiT's in_channels follow the autoencoder's latent channels
  checkpoint  the autoencoder's weights travel inside the DiT's model.safetensors under "autoencoder.", its config in
              the metadata: one file draws pictures, and its hash names the whole model (what the C2PA manifest and
              the PNG parameters cite)
  generation  noise and sampling in latent space; img2img encodes the init picture; inpainting repaints every latent
              cell a masked pixel touches and pastes pixels at the end, so the kept region stays the original
              pixel for pixel; `decode` turns the result into pixels

Metadata of a latent checkpoint: "image_size" is the picture in pixels, "sample_size" the latent the DiT draws, and
"autoencoder" = {"ae": AEConfig fields, "scale", "factor", "sha256": first 10 hex digits of the autoencoder file}.
Pixel checkpoints have neither "sample_size" nor "autoencoder"; everything here is then the identity.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, replace
from pathlib import Path

import torch
import torch.nn.functional as F

from incasa.image.autoencoder import Autoencoder, from_config, load_autoencoder
from incasa.image.dit import DiTConfig
from incasa.train.checkpoint import read_file, read_metadata, save_file_atomic

PREFIX = "autoencoder."  # key prefix of the autoencoder's tensors inside a DiT checkpoint


def load_frozen(path: str | Path, device: torch.device) -> tuple[Autoencoder, dict]:
    """The autoencoder of `incasa train autoencoder` (its model.safetensors), frozen, and the facts a DiT checkpoint
    records about it. A clear error for a DiT checkpoint, a training state or a missing file."""
    path = Path(path)
    meta = read_metadata(path)
    if meta.get("kind") != "incasa-autoencoder":
        raise ValueError(f"{path} is not an autoencoder from `incasa train autoencoder` (kind={meta.get('kind')!r})")
    if "optim_param_groups" in meta:
        raise ValueError(f"{path} is a resumable training state; use {path.parent / 'model.safetensors'}")
    ae = load_autoencoder(path, device)
    info = {"ae": asdict(ae.cfg), "scale": float(ae.scale), "factor": ae.factor,
            "sha256": hashlib.sha256(path.read_bytes()).hexdigest()[:10]}
    info = json.loads(json.dumps(info))  # as a checkpoint's metadata reads back (tuples become lists): comparable
    return ae, info


def model_config(mcfg: DiTConfig, info: dict | None, pixel_size: tuple[int, int]) -> tuple[DiTConfig, tuple[int, int]]:
    """The DiT config for this space and the size it draws. Latent: in_channels become the latent channels (as
    text_dim follows the text encoder), and the latent must tile into patches. A latent preset without an
    autoencoder is refused with the command that makes one."""
    if info is None:
        if mcfg.in_channels != 3:
            raise ValueError(f"this preset draws {mcfg.in_channels}-channel latents, not pixels: train an autoencoder "
                             f"first (`incasa train autoencoder --data DIR --out runs/ae`) and pass "
                             f"--autoencoder runs/ae/model.safetensors")
        size = pixel_size
    else:
        f = info["factor"]
        if pixel_size[0] % f or pixel_size[1] % f:
            raise ValueError(f"images of {pixel_size[1]}x{pixel_size[0]} do not divide by the autoencoder's factor {f}")
        size = (pixel_size[0] // f, pixel_size[1] // f)
        mcfg = replace(mcfg, in_channels=info["ae"]["latent_channels"])
    if size[0] % mcfg.patch_size or size[1] % mcfg.patch_size:
        what = "latents" if info else "images"
        raise ValueError(f"{what} of {size[1]}x{size[0]} do not tile into patches of {mcfg.patch_size}; pick a "
                         f"preset with a patch size that divides {min(size)}")
    return mcfg, size


@torch.no_grad()
def encode_all(ae: Autoencoder, x_NCHW: torch.Tensor, batch: int = 256, progress=None) -> torch.Tensor:
    """Scaled posterior means [N, C, H/f, W/f] of pictures in [-1, 1], in batches (the encoder is frozen)."""
    task = progress.add_task("encoding images to latents", total=len(x_NCHW)) if progress else None
    out = []
    for chunk in x_NCHW.split(batch):
        out.append(ae.encode(chunk))
        if progress:
            progress.advance(task, len(chunk))
    # contiguous: the encoder's chunked output is strided, and a strided batch takes other (not bitwise equal)
    # kernels than the same values read back from the cache, which would break exact resume
    return torch.cat(out).contiguous()


def cached_latents(ae: Autoencoder, info: dict, x_NCHW: torch.Tensor, data_key: str, cache_path: Path,
                   console=None) -> torch.Tensor:
    """encode_all, cached in `cache_path` under a key of (autoencoder, data, image count and shape): a resumed run,
    or every rank of a distributed one after rank 0, reads the latents instead of encoding again."""
    from rich.progress import Progress

    key = hashlib.sha256(json.dumps([info["sha256"], data_key, list(x_NCHW.shape)]).encode()).hexdigest()
    if cache_path.exists() and read_metadata(cache_path).get("key") == key:
        return read_file(cache_path)[0]["latents"].to(x_NCHW.device)
    with Progress(console=console, transient=True) as p:
        z = encode_all(ae, x_NCHW, progress=p)
    save_file_atomic({"latents": z}, cache_path, {"key": key})
    return z


def checkpoint_tensors(ae: Autoencoder | None) -> dict[str, torch.Tensor]:
    """The autoencoder's tensors under PREFIX, in half precision like the DiT's (none for a pixel model)."""
    if ae is None:
        return {}
    return {PREFIX + k: v.half() for k, v in ae.state_dict().items()}


def split_checkpoint(tensors: dict[str, torch.Tensor], meta: dict) -> tuple[dict[str, torch.Tensor], Autoencoder | None]:
    """A DiT checkpoint's tensors -> (the DiT's state dict, the frozen autoencoder or None for a pixel model)."""
    dit = {k: v for k, v in tensors.items() if not k.startswith(PREFIX)}
    info = meta.get("autoencoder")
    if info is None:
        if len(dit) != len(tensors):
            raise ValueError("the checkpoint holds autoencoder weights but no autoencoder config")
        return dit, None
    ae = from_config(info["ae"])
    try:
        ae.load_state_dict({k[len(PREFIX):]: v.float() for k, v in tensors.items() if k.startswith(PREFIX)})
    except RuntimeError as e:
        raise ValueError(f"the checkpoint's autoencoder does not match its config: {str(e).splitlines()[0]}") from None
    return dit, ae.eval().requires_grad_(False)


def sample_size(meta: dict) -> tuple[int, int]:
    """The size the DiT draws: the latent for a latent checkpoint, else the picture."""
    h, w = meta.get("sample_size") or meta["image_size"]
    return int(h), int(w)


def latent_mask(mask_B1HW: torch.Tensor, factor: int) -> torch.Tensor:
    """A pixel mask (1 = repaint) at latent resolution: a latent cell is repainted if any of its pixels is, so the
    generated region covers the whole mask; the final pixel paste restores every pixel outside it."""
    return F.max_pool2d(mask_B1HW, factor) if factor > 1 else mask_B1HW
