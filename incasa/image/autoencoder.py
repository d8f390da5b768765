"""A small convolutional autoencoder trained in-house: the latent space for the larger DiT presets.

    x [B, 3, H, W] in [-1, 1]  --encode-->  z [B, C, H/f, W/f]  --decode-->  x_hat [B, 3, H, W]

Encoder and decoder are stacks of residual conv blocks with a stride-2 conv (down) or nearest-neighbour upsampling
+ conv (up) per level, so f = 2 ** (len(mults) - 1). The encoder predicts a mean and a log-variance; training samples
z = mean + std * eps and adds a tiny KL term (SD's recipe) so the latent space stays smooth and bounded, while
generation uses the mean. After training, `scale` is set so that scale * z has unit standard deviation over the
training images: the DiT's rectified flow assumes data and noise of comparable scale.

Loss: L1 + MSE on pixels + kl_weight * KL. There is no perceptual (LPIPS) or adversarial term: both need a pretrained
network we would have to download, and our rule is to train everything from scratch. Expect some blur as a result.

`train_autoencoder(cfg)` is the visible training loop (AdamW, warmup + cosine, exact resume through
incasa.train.checkpoint, reconstruction grids, metrics, curve), like incasa/image/train.py.
"""

from __future__ import annotations

import copy
import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class AEConfig:
    in_channels: int = 3
    latent_channels: int = 4
    base: int = 32  # channels at full resolution
    mults: tuple[int, ...] = (1, 2, 4)  # channel multiplier per level; len - 1 downsamplings
    blocks: int = 1  # residual blocks per level


AE_PRESETS: dict[str, AEConfig] = {
    "tiny": AEConfig(base=8, mults=(1, 2), latent_channels=4),  # tests
    # 64x64 emoji -> 16x16x4 latents; a DiT with patch 2 sees 64 tokens, as the pixel default does with patch 8
    "emoji": AEConfig(base=16, mults=(1, 2, 4), latent_channels=4),
    # the latent space of the 1b / 8b presets: /8 and 16 channels, as FLUX's
    "f8c16": AEConfig(base=128, mults=(1, 2, 4, 4), latent_channels=16, blocks=2),
}


def _norm(c: int) -> nn.GroupNorm:
    return nn.GroupNorm(min(8, c), c, eps=1e-6)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.n1, self.c1 = _norm(cin), nn.Conv2d(cin, cout, 3, padding=1)
        self.n2, self.c2 = _norm(cout), nn.Conv2d(cout, cout, 3, padding=1)
        self.skip = nn.Conv2d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x):
        h = self.c1(F.silu(self.n1(x)))
        return self.skip(x) + self.c2(F.silu(self.n2(h)))


class Autoencoder(nn.Module):
    def __init__(self, cfg: AEConfig):
        super().__init__()
        self.cfg = cfg
        chans = [cfg.base * m for m in cfg.mults]
        self.factor = 2 ** (len(chans) - 1)
        enc: list[nn.Module] = [nn.Conv2d(cfg.in_channels, chans[0], 3, padding=1)]
        for i, c in enumerate(chans):
            cin = chans[max(i - 1, 0)]
            enc += [ResBlock(cin if b == 0 else c, c) for b in range(cfg.blocks)]
            if i < len(chans) - 1:
                enc.append(nn.Conv2d(c, c, 3, stride=2, padding=1))
        enc += [_norm(chans[-1]), nn.SiLU(), nn.Conv2d(chans[-1], 2 * cfg.latent_channels, 3, padding=1)]
        self.encoder = nn.Sequential(*enc)
        dec: list[nn.Module] = [nn.Conv2d(cfg.latent_channels, chans[-1], 3, padding=1)]
        for i, c in reversed(list(enumerate(chans))):
            cin = chans[min(i + 1, len(chans) - 1)]
            dec += [ResBlock(cin if b == 0 else c, c) for b in range(cfg.blocks)]
            if i > 0:
                dec += [nn.Upsample(scale_factor=2, mode="nearest"), nn.Conv2d(c, c, 3, padding=1)]
        dec += [_norm(chans[0]), nn.SiLU(), nn.Conv2d(chans[0], cfg.in_channels, 3, padding=1)]
        self.decoder = nn.Sequential(*dec)
        self.register_buffer("scale", torch.ones(()))  # set after training: unit-variance latents

    def moments(self, x_BCHW):
        mean, logvar = self.encoder(x_BCHW).chunk(2, dim=1)
        return mean, logvar.clamp(-30.0, 20.0)

    def encode(self, x_BCHW, generator: torch.Generator | None = None):
        """Scaled latents [B, C, H/f, W/f]: the mean, or a posterior sample when a generator is given."""
        mean, logvar = self.moments(x_BCHW)
        if generator is not None:
            eps = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean)
            mean = mean + (0.5 * logvar).exp() * eps
        return mean * self.scale

    def decode(self, z_BCHW):
        return self.decoder(z_BCHW / self.scale)


def ae_loss(ae: Autoencoder, x_BCHW, generator, kl_weight: float) -> tuple[torch.Tensor, dict]:
    mean, logvar = ae.moments(x_BCHW)
    eps = torch.randn(mean.shape, generator=generator, device=generator.device).to(mean)
    x_hat = ae.decoder(mean + (0.5 * logvar).exp() * eps)
    l1, mse = (x_hat - x_BCHW).abs().mean(), ((x_hat - x_BCHW) ** 2).mean()
    kl = 0.5 * (mean ** 2 + logvar.exp() - 1 - logvar).mean()
    return l1 + mse + kl_weight * kl, {"l1": l1.item(), "mse": mse.item(), "kl": kl.item()}


def psnr(x_hat, x) -> float:
    """Peak signal-to-noise ratio in dB of images in [-1, 1] (peak-to-peak 2)."""
    mse = float(((x_hat.clamp(-1, 1) - x) ** 2).mean())
    return 10 * np.log10(4.0 / max(mse, 1e-12))


def from_config(cfg: dict) -> Autoencoder:
    """An untrained Autoencoder from the config a checkpoint's metadata stores (JSON: mults as a list)."""
    return Autoencoder(AEConfig(**{**cfg, "mults": tuple(cfg["mults"])}))


def load_autoencoder(path: str | Path, device: str = "cpu") -> Autoencoder:
    from incasa.train.checkpoint import read_file

    tensors, meta = read_file(Path(path))
    if meta.get("kind") != "incasa-autoencoder":
        raise ValueError(f"{path} is not an incasa autoencoder (kind={meta.get('kind')!r})")
    ae = from_config(meta["ae"])
    ae.load_state_dict({k: v.float() for k, v in tensors.items()})
    return ae.to(device).eval().requires_grad_(False)


@dataclass(frozen=True)
class AETrainConfig:
    data: str
    out: str
    preset: str = "emoji"
    steps: int = 4000
    batch_size: int = 32
    lr: float = 4e-4
    warmup: int = 200
    kl_weight: float = 1e-6
    ema_decay: float = 0.999
    log_every: int = 10
    sample_every: int = 500
    ckpt_every: int = 250
    seed: int = 0
    device: str = "auto"
    max_seconds: float = 0.0
    groups: str = ""
    extra: dict = field(default_factory=dict)


def train_autoencoder(cfg: AETrainConfig, *, console=None) -> dict:
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from incasa import __version__
    from incasa.image.data import load_split
    from incasa.image.train import _device, save_grid
    from incasa.train.checkpoint import load_training_state, read_metadata, save_training_state, save_weights
    from incasa.train.ema import ema_decay_at, ema_update
    from incasa.train.metrics import MetricsLog, plot_curve
    from incasa.train.schedule import lr_at

    if cfg.preset not in AE_PRESETS:
        raise ValueError(f"unknown autoencoder preset {cfg.preset!r}; choose from {', '.join(AE_PRESETS)}")
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    groups = tuple(g for g in cfg.groups.split(",") if g) or None
    images, _ = load_split(Path(cfg.data), "train", groups=groups)
    x_all = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # [N, 3, H, W]
    acfg = AE_PRESETS[cfg.preset]
    if x_all.shape[-1] % (2 ** (len(acfg.mults) - 1)):
        raise ValueError(f"image size {x_all.shape[-1]} is not divisible by the preset's factor")
    ae = Autoencoder(acfg).to(device)
    ema = copy.deepcopy(ae).requires_grad_(False)
    opt = torch.optim.AdamW(ae.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    data_version = json.loads((Path(cfg.data) / "index.json").read_text())["data_version"]
    meta = {"kind": "incasa-autoencoder", "incasa_version": __version__, "ae": asdict(acfg), "preset": cfg.preset,
            "data_version": data_version, "image_size": list(x_all.shape[-2:]),
            "train": {k: v for k, v in asdict(cfg).items() if k != "extra"}}
    state_path = out / "train_state.safetensors"
    step = 0
    if state_path.exists():
        prev = read_metadata(state_path)
        if prev["ae"] != json.loads(json.dumps(meta["ae"])) or prev["data_version"] != data_version:
            raise ValueError(f"{state_path} was trained with another autoencoder or data; use a new --out folder")
        step = load_training_state(state_path, model=ae, ema=ema, optimizer=opt, generators={"train": gen})["step"]
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if step else None)
    probe = x_all[torch.linspace(0, len(x_all) - 1, 8).long()]

    def batch_indices(step: int) -> torch.Tensor:
        epoch, pos = divmod(step * cfg.batch_size, len(x_all))
        perm = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        idx = perm[pos: pos + cfg.batch_size]
        if len(idx) < cfg.batch_size:
            nxt = torch.randperm(len(x_all), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch + 1))
            idx = torch.cat([idx, nxt[: cfg.batch_size - len(idx)]])
        return idx.to(device)

    losses, t0, seen = [], time.time(), 0
    columns = [TextColumn("[bold]train autoencoder"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[info]}"), TimeRemainingColumn()]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            x = x_all[batch_indices(step)]
            if torch.rand((), generator=gen, device=device) < 0.5:  # horizontal flips: emoji are mostly symmetric
                x = x.flip(-1)
            lr = lr_at(step, base=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss, parts = ae_loss(ae, x, gen, cfg.kl_weight)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(ae.parameters(), 1.0)
            opt.step()
            ema_update(ema, ae, ema_decay_at(step, cfg.ema_decay))
            step += 1
            seen += len(x)
            losses.append(loss.item())
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = seen / (time.time() - t0)
                log.log(step=step, loss=float(np.mean(losses[-cfg.log_every:])), lr=lr, grad_norm=float(grad_norm),
                        images_per_s=rate, elapsed_s=round(time.time() - t0, 2), **parts)
                progress.update(task, info=f"loss {np.mean(losses[-cfg.log_every:]):.4f}  {rate:.1f} img/s")
            progress.update(task, completed=step)
            out_of_time = cfg.max_seconds > 0 and time.time() - t0 > cfg.max_seconds
            if step % cfg.sample_every == 0 or step == cfg.steps or out_of_time:
                with torch.no_grad():  # top row: originals, bottom row: EMA reconstructions
                    save_grid(torch.cat([probe, ema.decode(ema.encode(probe))]), out / "samples" /
                              f"step_{step:07d}.png", ncol=8)
            if step % cfg.ckpt_every == 0 or step == cfg.steps or out_of_time:
                save_training_state(state_path, model=ae, ema=ema, optimizer=opt, generators={"train": gen},
                                    metadata={**meta, "step": step})
            if out_of_time:
                break
    with torch.no_grad():  # unit-variance latents for the DiT: measured on up to 2,048 training images
        z = torch.cat([ema.moments(c)[0] for c in x_all[:2048].split(256)])
        ema.scale.fill_(1.0 / float(z.std()))
        recon = psnr(torch.cat([ema.decode(ema.encode(c)) for c in x_all[:512].split(128)]), x_all[:512])
    save_weights(ema, out / "model.safetensors", {**meta, "step": step, "scale": float(ema.scale),
                                                 "train_psnr_db": recon})
    plot_curve(out / "metrics.jsonl", out / "curve.png", title=f"incasa autoencoder {cfg.preset}: L1 + MSE + KL")
    return {"step": step, "losses": losses, "out": str(out), "train_psnr_db": recon}
