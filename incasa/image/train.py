"""Training the text-to-image DiT with rectified flow: one visible loop, top to bottom.

setup   load the emoji split into memory, pre-compute every caption's text features once (the encoder is frozen);
        with --autoencoder (the 1b / 8b presets) encode every image once into its latents (incasa/image/latent.py);
        build the DiT, its EMA copy, AdamW, and resume from out/train_state.safetensors if it exists
loop    batch -> pick one caption per image (dropped to "" with prob cfg_dropout, for classifier-free guidance)
        -> rectified-flow loss -> backward -> clip -> AdamW -> EMA; log, sample a grid, checkpoint
end     export the EMA weights in half precision (model.safetensors) and draw the loss curve

All randomness comes from one torch.Generator whose state is checkpointed, and the data order of epoch e is a
permutation drawn from seed + e, so a resumed run repeats the uninterrupted run's losses exactly (a test checks it).
"""

from __future__ import annotations

import copy
import hashlib
import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from incasa import __version__
from incasa.image import latent
from incasa.image.data import load_split
from incasa.image.dit import PRESETS, DiT
from incasa.image.flow import rf_loss, sample
from incasa.image.text_encoder import load_text_encoder
from incasa.train.checkpoint import (load_training_state, read_file, read_metadata, save_file_atomic,
                                     save_training_state, save_weights)
from incasa.train.ema import ema_decay_at, ema_update
from incasa.train.metrics import MetricsLog, plot_curve
from incasa.train.schedule import lr_at


@dataclass(frozen=True)
class TrainConfig:
    data: str  # folder written by `incasa data emoji`
    out: str  # run folder: train_state.safetensors, model.safetensors, metrics.jsonl, samples/, curve.png
    preset: str = "small"
    text_encoder: str = "minilm"
    autoencoder: str = ""  # model.safetensors of `incasa train autoencoder`: train in its latent space (1b, 8b)
    steps: int = 20000
    batch_size: int = 64
    lr: float = 3e-4
    warmup: int = 500
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    cfg_dropout: float = 0.1
    styles: str = ""  # comma-separated subset of noto,twemoji,fluent,openmoji ("" = all)
    groups: str = ""  # comma-separated emojibase groups, e.g. food-drink,animals-nature ("" = all)
    log_every: int = 10
    sample_every: int = 1000
    ckpt_every: int = 500
    seed: int = 0
    device: str = "auto"
    max_seconds: float = 0.0  # stop cleanly (grid, state, export) after this long in this process; 0 = no limit


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def encode_captions(encoder, captions: list[str], batch: int = 256, progress=None) -> dict[str, torch.Tensor]:
    """Encode unique captions once; tokens padded to the longest, stored in half precision to save memory."""
    chunks = []
    task = progress.add_task("encoding captions", total=len(captions)) if progress else None
    for i in range(0, len(captions), batch):
        chunks.append({k: v.cpu() for k, v in encoder.encode(captions[i: i + batch]).items()})
        if progress:
            progress.advance(task, len(captions[i: i + batch]))
    L = max(c["tokens"].shape[1] for c in chunks)
    pad = torch.nn.functional.pad
    return {"tokens": torch.cat([pad(c["tokens"], (0, 0, 0, L - c["tokens"].shape[1])) for c in chunks]).half(),
            "mask": torch.cat([pad(c["mask"], (0, L - c["mask"].shape[1])) for c in chunks]),
            "pooled": torch.cat([c["pooled"] for c in chunks]).half()}


def cached_caption_features(encoder, captions: list[str], cache_path: Path, console=None) -> dict[str, torch.Tensor]:
    """encode_captions, cached in `cache_path` under a key of (encoder, captions): the features are a pure function of
    both, so a resumed run (or a second run on the same captions) starts at once. Returns CPU tensors."""
    key = hashlib.sha256(json.dumps([encoder.spec, captions]).encode()).hexdigest()
    if cache_path.exists() and read_metadata(cache_path).get("key") == key:
        return read_file(cache_path)[0]
    with Progress(console=console, transient=True) as p:
        table = encode_captions(encoder, captions, progress=p)
    save_file_atomic(table, cache_path, {"key": key})
    return table


def caption_ids(metas: list[dict], device) -> tuple[list[str], dict[str, int], torch.Tensor, torch.Tensor]:
    """The sorted unique captions (with "" for guidance dropout), their index, and every image's caption ids as one
    padded table [N, max captions] + counts [N] on `device`, so a batch picks one caption per image in one op."""
    captions = sorted({c for m in metas for c in m["captions"]} | {""})
    cap_index = {c: i for i, c in enumerate(captions)}
    n_caps = torch.tensor([len(m["captions"]) for m in metas])
    ids = torch.zeros(len(metas), int(n_caps.max()), dtype=torch.long)
    for i, m in enumerate(metas):
        ids[i, : len(m["captions"])] = torch.tensor([cap_index[c] for c in m["captions"]])
    return captions, cap_index, ids.to(device), n_caps.to(device)


def gather_cond(table: dict, idx: torch.Tensor, trim: bool = True) -> dict[str, torch.Tensor]:
    """Rows of the caption table (on the table's device). trim: cut to the longest real caption in this batch, which
    saves CPU time; on GPUs the full, fixed length keeps torch.compile from recompiling for every new length."""
    mask = table["mask"][idx]
    L = max(1, int(mask.sum(1).max())) if trim else mask.shape[1]
    return {"tokens": table["tokens"][idx, :L].float(), "mask": mask[:, :L], "pooled": table["pooled"][idx].float()}


def save_grid(images_BCHW: torch.Tensor, path: Path, ncol: int) -> None:
    from PIL import Image

    x = ((images_BCHW.clamp(-1, 1) + 1) * 127.5).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    B, H, W, _ = x.shape
    nrow = (B + ncol - 1) // ncol
    grid = np.full((nrow * H, ncol * W, 3), 255, np.uint8)
    for i in range(B):
        r, c = divmod(i, ncol)
        grid[r * H:(r + 1) * H, c * W:(c + 1) * W] = x[i]
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.png")
    Image.fromarray(grid).resize((ncol * W * 2, nrow * H * 2), Image.NEAREST).save(tmp)
    tmp.replace(path)


def train(cfg: TrainConfig, *, console=None, encoder=None) -> dict:
    """Run (or resume) training. encoder: an already loaded text encoder to use instead of load_text_encoder(
    cfg.text_encoder) — e.g. one prepared on a GPU machine; its `spec` must still equal cfg.text_encoder."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
    device = _device(cfg.device)
    # the autoencoder first (before minutes of data loading): a wrong file, or a latent preset without one, fails now
    ae, ae_info = latent.load_frozen(cfg.autoencoder, device) if cfg.autoencoder else (None, None)
    if ae is None:
        latent.model_config(PRESETS[cfg.preset], None, (0, 0))
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    # ---- data: images in [-1, 1] and a table of pre-computed caption features
    styles = tuple(s for s in cfg.styles.split(",") if s) or None
    groups = tuple(g for g in cfg.groups.split(",") if g) or None
    images, metas = load_split(Path(cfg.data), "train", styles=styles, groups=groups)
    x_all = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # [N, 3, H, W]
    captions, cap_index, cap_ids, n_caps = caption_ids(metas, device)
    if encoder is None:
        encoder = load_text_encoder(cfg.text_encoder)
    elif encoder.spec != cfg.text_encoder:
        raise ValueError(f"the given encoder is {encoder.spec!r} but the config says {cfg.text_encoder!r}")
    table = cached_caption_features(encoder, captions, out / "captions.safetensors", console)
    table = {k: v.to(device) for k, v in table.items()}
    null_id = cap_index[""]
    data_version = json.loads((Path(cfg.data) / "index.json").read_text())["data_version"]

    # ---- latent space (1b, 8b, or any preset given --autoencoder): encode every image once, keep only latents
    mcfg = PRESETS[cfg.preset]
    if mcfg.text_dim != encoder.dim:
        mcfg = type(mcfg)(**{**asdict(mcfg), "text_dim": encoder.dim})
    pixel_size = tuple(int(s) for s in x_all.shape[-2:])
    mcfg, (H, W) = latent.model_config(mcfg, ae_info, pixel_size)
    if ae is not None:
        x_all = latent.cached_latents(ae, ae_info, x_all, f"{data_version} {cfg.styles} {cfg.groups}",
                                      out / "latents.safetensors", console)

    # ---- model, EMA, optimiser
    model = DiT(mcfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    gen = torch.Generator(device).manual_seed(cfg.seed)  # on the training device: no host round trip per draw
    num_tokens = (H // mcfg.patch_size) * (W // mcfg.patch_size)
    meta = {"kind": "incasa-image-dit", "incasa_version": __version__, "dit": asdict(mcfg), "preset": cfg.preset,
            "text_encoder": encoder.spec, "image_size": list(pixel_size), "data_version": data_version,
            "train": asdict(cfg), "num_images": len(metas)}
    if ae is not None:
        meta.update(sample_size=[H, W], autoencoder=ae_info)
    state_path = out / "train_state.safetensors"
    step = 0
    if state_path.exists():
        prev = read_metadata(state_path)
        if (prev["dit"] != meta["dit"] or prev["data_version"] != data_version
                or prev.get("autoencoder") != meta.get("autoencoder")):
            raise ValueError(f"{state_path} was trained with another model or data; use a new --out folder")
        prev = load_training_state(state_path, model=model, ema=ema, optimizer=opt, generators={"train": gen})
        step = prev["step"]
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if step else None)
    compiled = torch.compile(model) if device.type == "cuda" else model

    # fixed prompts for the sample grids: the first captions of 8 spread-out training images
    probe = [metas[i]["captions"][0] for i in np.linspace(0, len(metas) - 1, 8).astype(int)]
    probe_cond = encoder.encode(probe)
    probe_null = encoder.encode([""] * len(probe))

    def batch_indices(step: int) -> torch.Tensor:
        epoch, pos = divmod(step * cfg.batch_size, len(metas))
        perm = torch.randperm(len(metas), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        idx = perm[pos: pos + cfg.batch_size]
        if len(idx) < cfg.batch_size:  # wrap into the next epoch's order
            nxt = torch.randperm(len(metas), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch + 1))
            idx = torch.cat([idx, nxt[: cfg.batch_size - len(idx)]])
        return idx

    losses = []
    t0, seen = time.time(), 0
    columns = [TextColumn("[bold]train image"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn()]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            idx = batch_indices(step).to(device)
            # one caption per image, uniform over its captions; dropped to "" with prob cfg_dropout
            which = (torch.rand(len(idx), generator=gen, device=device) * n_caps[idx]).long()
            drop = torch.rand(len(idx), generator=gen, device=device) < cfg.cfg_dropout
            batch_caps = torch.where(drop, null_id, cap_ids[idx, which])
            cond = gather_cond(table, batch_caps, trim=device.type != "cuda")
            x0 = x_all[idx]
            lr = lr_at(step, base=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = rf_loss(compiled, x0, cond, num_tokens, generator=gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema_update(ema, model, ema_decay_at(step, cfg.ema_decay))
            step += 1
            seen += len(idx)
            losses.append(loss.detach())
            if step % cfg.log_every == 0 or step == cfg.steps:
                losses[-cfg.log_every:] = [float(v) for v in losses[-cfg.log_every:]]  # one host sync per log
                rate = seen / (time.time() - t0)
                log.log(step=step, loss=float(np.mean(losses[-cfg.log_every:])), lr=lr,
                        grad_norm=float(grad_norm), images_per_s=rate, elapsed_s=round(time.time() - t0, 2))
                progress.update(task, info=f"loss {np.mean(losses[-cfg.log_every:]):.4f}  {rate:.1f} img/s")
            progress.update(task, completed=step)
            out_of_time = cfg.max_seconds > 0 and time.time() - t0 > cfg.max_seconds
            if step % cfg.sample_every == 0 or step == cfg.steps or out_of_time:
                gs = torch.Generator().manual_seed(1234)
                noise = torch.randn(len(probe), mcfg.in_channels, H, W, generator=gs).to(device)
                imgs = sample(ema, noise, {k: v.to(device) for k, v in probe_cond.items()},
                              {k: v.to(device) for k, v in probe_null.items()}, steps=25, guidance=4.0)
                with torch.no_grad():
                    imgs = ae.decode(imgs) if ae is not None else imgs
                save_grid(imgs, out / "samples" / f"step_{step:07d}.png", ncol=8)
            if step % cfg.ckpt_every == 0 or step == cfg.steps or out_of_time:
                save_training_state(state_path, model=model, ema=ema, optimizer=opt, generators={"train": gen},
                                    metadata={**meta, "step": step})
            if out_of_time:  # a later run with the same --out resumes from here
                break
    save_weights(ema, out / "model.safetensors", {**meta, "step": step, "sample_prompts": probe},
                 extra=latent.checkpoint_tensors(ae))
    plot_curve(out / "metrics.jsonl", out / "curve.png", title=f"incasa image {cfg.preset}: rectified-flow loss")
    return {"step": step, "losses": [float(v) for v in losses], "out": str(out)}
