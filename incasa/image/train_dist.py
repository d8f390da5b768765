"""Training the image DiT on many processes: torchrun + FSDP2, activation checkpointing, regional compile, FP8, DCP.

The same objective and data as train.py (rectified flow on the emoji set, caption dropout for guidance), but every
piece of scale is applied from outside the model by incasa/train/parallelize.py, in torchtitan's order:

    model = DiT(cfg)                      plain model, identical to one-device training
    ema   = deepcopy(model)               the sampled weights; sharded like the model, never converted to FP8
    apply_float8(model)                   --fp8 tensorwise|rowwise: torchao Float8Linear on the token-wise linears
    apply_activation_checkpointing        --ac: recompute each block in backward (memory of one block)
    apply_regional_compile                on CUDA: torch.compile each block
    apply_fsdp(model), apply_fsdp(ema)    FSDP2: parameters sharded per block across the ranks
    AdamW(model.parameters())             after sharding: it holds the local shards only

Batches: --batch-size is per process; the global batch is WORLD_SIZE x that. Every rank draws the same global order
(a permutation per epoch from the seed) and takes its own slice, so the images seen depend on the global batch only.
Noise and caption choices come from a generator re-seeded from (seed, step, rank) at every step, so a resume needs no
RNG state (DCP cannot re-shard one) and a resume on the same world size repeats the uninterrupted run exactly.

Checkpoints: out/dcp (torch.distributed.checkpoint: each rank writes its shards; loads on any world size, e.g. 8
GPUs -> 2, or -> this CPU in one process); at the end (and on --max-minutes) rank 0 also writes out/model.safetensors,
the full EMA weights in fp16 with the metadata train.py writes, so `incasa generate --checkpoint` uses it as is.

Launch (torchrun sets RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT):

    torchrun --standalone --nproc-per-node 8 -m incasa.image.train_dist --data data/emoji64 --out runs/d \\
        --preset base --steps 20000 --batch-size 64 --fp8 tensorwise --ac
    # two machines of 8 GPUs: the same line on both, plus
    #   --nnodes 2 --rdzv-backend c10d --rdzv-endpoint HOST0:29500 --rdzv-id job1   (instead of --standalone)
    # CPU (gloo), for tests and debugging:
    torchrun --standalone --nproc-per-node 2 -m incasa.image.train_dist --data ... --device cpu --text-encoder hash

Without torchrun (no RANK in the environment) it runs as one process with a world of 1, with the same checkpoints.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist

from incasa import __version__
from incasa.image import latent
from incasa.image.data import load_split
from incasa.image.dit import PRESETS, DiT, DoubleStreamBlock, SingleStreamBlock
from incasa.image.flow import rf_loss, sample
from incasa.image.text_encoder import load_text_encoder
from incasa.image.train import TrainConfig, cached_caption_features, caption_ids, gather_cond, save_grid
from incasa.train.checkpoint import save_file_atomic
from incasa.train.dcp import load_dcp, read_dcp_meta, save_dcp
from incasa.train.ema import ema_decay_at, ema_update
from incasa.train.metrics import MetricsLog, plot_curve
from incasa.train.parallelize import (FLOAT8_RECIPES, apply_activation_checkpointing, apply_float8, apply_fsdp,
                                      apply_regional_compile, destroy_distributed, init_distributed)
from incasa.train.schedule import lr_at

BLOCKS = (DoubleStreamBlock, SingleStreamBlock)


@dataclass(frozen=True)
class ScaleConfig:
    fp8: str | None = None  # None, "tensorwise" or "rowwise" (CUDA, compute capability 8.9+)
    activation_checkpointing: bool = False
    compile: bool = True  # regional compile of the blocks (CUDA only; CPU runs stay eager)
    max_minutes: float = 0.0  # stop cleanly after this long in this process (0: no limit)


@dataclass(frozen=True)
class World:
    rank: int
    world_size: int
    device: torch.device
    mesh: object | None  # a DeviceMesh, or None for one process without a process group

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def _world(device_name: str) -> World:
    if "RANK" in os.environ:
        d = init_distributed()
        return World(d.rank, d.world_size, d.device, d.mesh)
    if device_name == "cuda" or (device_name == "auto" and torch.cuda.is_available()):
        device = torch.device("cuda")
    else:
        device = torch.device("cpu")
    return World(0, 1, device, None)


def _global_indices(step: int, global_batch: int, n: int, seed: int) -> torch.Tensor:
    """The step's global batch: consecutive slices of one permutation per epoch (as train.py, at the global size)."""
    epoch, pos = divmod(step * global_batch, n)
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
    idx = perm[pos: pos + global_batch]
    while len(idx) < global_batch:  # wrap into the next epoch(s)
        epoch += 1
        nxt = torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100003 + epoch))
        idx = torch.cat([idx, nxt[: global_batch - len(idx)]])
    return idx


def _full_state(module: torch.nn.Module, world: World) -> dict[str, torch.Tensor]:
    """Full (unsharded) weights on the CPU; collective under FSDP (every rank must call it)."""
    if world.mesh is None:
        return {k: v.detach().cpu() for k, v in module.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(module, options=StateDictOptions(full_state_dict=True, cpu_offload=True))


def train_distributed(cfg: TrainConfig, scale: ScaleConfig = ScaleConfig(), *, console=None) -> dict:
    """Run (or resume) training on every process of the torchrun job (or alone). Returns rank 0's summary."""
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
    if scale.fp8 is not None and scale.fp8 not in FLOAT8_RECIPES:
        raise ValueError(f"unknown FP8 recipe {scale.fp8!r}; choose one of {', '.join(FLOAT8_RECIPES)}")
    world = _world(cfg.device)
    device, out = world.device, Path(cfg.out)
    # the autoencoder first (before minutes of data loading): a wrong file, or a latent preset without one, fails now
    ae, ae_info = latent.load_frozen(cfg.autoencoder, device) if cfg.autoencoder else (None, None)
    if ae is None:
        latent.model_config(PRESETS[cfg.preset], None, (0, 0))
    if world.is_main:
        out.mkdir(parents=True, exist_ok=True)
    _barrier(world)
    torch.manual_seed(cfg.seed)  # the same initial weights on every rank (FSDP then keeps each rank's shard)

    # ---- data (every rank holds the whole split: the emoji set is small; a large corpus would stream shards)
    styles = tuple(s for s in cfg.styles.split(",") if s) or None
    groups = tuple(g for g in cfg.groups.split(",") if g) or None
    images, metas = load_split(Path(cfg.data), "train", styles=styles, groups=groups)
    x_all = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float().div(127.5).sub(1)  # [N, 3, H, W]
    captions, cap_index, cap_ids, n_caps = caption_ids(metas, device)
    encoder = load_text_encoder(cfg.text_encoder)
    # rank 0 encodes the captions once and caches them; the others wait, then read the same cache
    cache = out / "captions.safetensors"
    table = cached_caption_features(encoder, captions, cache, console) if world.is_main else None
    _barrier(world)
    if table is None:  # written by rank 0 above: this is a read
        table = cached_caption_features(encoder, captions, cache)
    table = {k: v.to(device) for k, v in table.items()}
    null_id = cap_index[""]
    data_version = json.loads((Path(cfg.data) / "index.json").read_text())["data_version"]

    # ---- latent space (1b, 8b, or any preset given --autoencoder): rank 0 encodes and caches, the others read
    mcfg = PRESETS[cfg.preset]
    if mcfg.text_dim != encoder.dim:
        mcfg = type(mcfg)(**{**asdict(mcfg), "text_dim": encoder.dim})
    pixel_size = tuple(int(s) for s in x_all.shape[-2:])
    mcfg, (H, W) = latent.model_config(mcfg, ae_info, pixel_size)
    if ae is not None:
        key, cache_z = f"{data_version} {cfg.styles} {cfg.groups}", out / "latents.safetensors"
        z = latent.cached_latents(ae, ae_info, x_all, key, cache_z, console) if world.is_main else None
        _barrier(world)
        x_all = z if z is not None else latent.cached_latents(ae, ae_info, x_all, key, cache_z)

    # ---- model, EMA, scale treatments, optimiser
    model = DiT(mcfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    if scale.fp8 is not None:
        apply_float8(model, recipe=scale.fp8)
    if scale.activation_checkpointing:
        apply_activation_checkpointing(model, BLOCKS)
    if scale.compile and device.type == "cuda":
        apply_regional_compile(model, BLOCKS)
    if world.mesh is not None:
        apply_fsdp(model, world.mesh, block_types=BLOCKS)
        apply_fsdp(ema, world.mesh, block_types=BLOCKS)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=cfg.weight_decay)
    both = torch.nn.ModuleDict({"model": model, "ema": ema})  # one DCP checkpoint holds both, by parameter name
    num_tokens = (H // mcfg.patch_size) * (W // mcfg.patch_size)
    meta = {"kind": "incasa-image-dit", "incasa_version": __version__, "dit": asdict(mcfg), "preset": cfg.preset,
            "text_encoder": encoder.spec, "image_size": list(pixel_size), "data_version": data_version,
            "train": {**asdict(cfg), **{f"scale_{k}": v for k, v in asdict(scale).items()}},
            "num_images": len(metas)}
    if ae is not None:
        meta.update(sample_size=[H, W], autoencoder=ae_info)
    ckpt = out / "dcp"
    step = 0
    if (ckpt / "incasa.json").exists():
        prev = read_dcp_meta(ckpt)["extra"]
        if (prev.get("dit") != meta["dit"] or prev.get("data_version") != data_version
                or prev.get("autoencoder") != meta.get("autoencoder")):
            raise ValueError(f"{ckpt} was trained with another model or data; use a new --out folder")
        step, _ = load_dcp(ckpt, both, opt)
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if step else None) if world.is_main else None

    probe = [metas[i]["captions"][0] for i in np.linspace(0, len(metas) - 1, 8).astype(int)]
    probe_cond = {k: v.to(device) for k, v in encoder.encode(probe).items()}
    probe_null = {k: v.to(device) for k, v in encoder.encode([""] * len(probe)).items()}
    gen = torch.Generator(device)
    B, G = cfg.batch_size, cfg.batch_size * world.world_size
    losses: list[float] = []
    t0, seen = time.time(), 0
    while step < cfg.steps:
        idx = _global_indices(step, G, len(metas), cfg.seed)[world.rank * B:(world.rank + 1) * B].to(device)
        gen.manual_seed(cfg.seed * 1_000_003 + step * 1_009 + world.rank)
        which = (torch.rand(B, generator=gen, device=device) * n_caps[idx]).long()
        drop = torch.rand(B, generator=gen, device=device) < cfg.cfg_dropout
        cond = gather_cond(table, torch.where(drop, null_id, cap_ids[idx, which]), trim=False)
        lr = lr_at(step, base=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
        for g in opt.param_groups:
            g["lr"] = lr
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = rf_loss(model, x_all[idx], cond, num_tokens, generator=gen)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
        opt.step()
        ema_update(ema, model, ema_decay_at(step, cfg.ema_decay))
        step += 1
        seen += G
        mean_loss = loss.detach().clone()
        if world.mesh is not None:
            dist.all_reduce(mean_loss, op=dist.ReduceOp.AVG)
        losses.append(float(mean_loss))
        out_of_time = _agree(world, scale.max_minutes > 0 and time.time() - t0 > 60 * scale.max_minutes)
        if world.is_main and (step % cfg.log_every == 0 or step == cfg.steps):
            gn = grad_norm.full_tensor() if hasattr(grad_norm, "full_tensor") else grad_norm
            rate = seen / (time.time() - t0)
            log.log(step=step, loss=float(np.mean(losses[-cfg.log_every:])), lr=lr, grad_norm=float(gn),
                    images_per_s=rate, world_size=world.world_size, elapsed_s=round(time.time() - t0, 2))
            print(f"step {step}/{cfg.steps}  loss {np.mean(losses[-cfg.log_every:]):.4f}  {rate:.1f} img/s",
                  file=sys.stderr, flush=True)
        if step % cfg.sample_every == 0 or step == cfg.steps or out_of_time:  # collective: the EMA is sharded
            gs = torch.Generator().manual_seed(1234)
            noise = torch.randn(len(probe), mcfg.in_channels, H, W, generator=gs).to(device)
            imgs = sample(ema, noise, probe_cond, probe_null, steps=25, guidance=4.0)
            with torch.no_grad():
                imgs = ae.decode(imgs) if ae is not None else imgs
            if world.is_main:
                save_grid(imgs, out / "samples" / f"step_{step:07d}.png", ncol=8)
        if step % cfg.ckpt_every == 0 or step == cfg.steps or out_of_time:
            save_dcp(ckpt, both, opt, step, extra={"dit": meta["dit"], "data_version": data_version,
                                                   "autoencoder": meta.get("autoencoder")})
        if out_of_time:
            break
    weights = _full_state(ema, world)
    if world.is_main:
        save_file_atomic({k: v.to(torch.float16) for k, v in weights.items()} | latent.checkpoint_tensors(ae),
                         out / "model.safetensors",
                         {**meta, "step": step, "sample_prompts": probe})
        plot_curve(out / "metrics.jsonl", out / "curve.png", title=f"incasa image {cfg.preset} (FSDP2): loss")
    del model, ema, both, opt
    if world.mesh is not None:
        destroy_distributed()
    return {"step": step, "losses": losses, "out": str(out), "world_size": world.world_size}


def _barrier(world: World) -> None:
    if world.mesh is not None:
        dist.barrier()


def _agree(world: World, flag: bool) -> bool:
    """Every rank must stop at the same step (the checkpoint and the final gather are collective): any rank's
    deadline stops all."""
    if world.mesh is None:
        return flag
    t = torch.tensor([1.0 if flag else 0.0], device=world.device)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return bool(t.item())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m incasa.image.train_dist",
                                 description="Train the image DiT with FSDP2 under torchrun (see the module docstring).")
    ap.add_argument("--data", required=True, help="dataset folder from `incasa data emoji`")
    ap.add_argument("--out", required=True, help="run folder (resumes from out/dcp on any world size)")
    ap.add_argument("--preset", default="small", choices=sorted(PRESETS))
    ap.add_argument("--text-encoder", default="minilm")
    ap.add_argument("--autoencoder", default="", help="model.safetensors of `incasa train autoencoder`: train in its "
                                                      "latent space (needed by the 1b and 8b presets)")
    ap.add_argument("--steps", type=int, default=20000)
    ap.add_argument("--batch-size", type=int, default=64, help="per process; the global batch is WORLD_SIZE x this")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--ema-decay", type=float, default=0.999)
    ap.add_argument("--log-every", type=int, default=10)
    ap.add_argument("--sample-every", type=int, default=1000)
    ap.add_argument("--ckpt-every", type=int, default=500)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="auto", help="auto, cpu or cuda (under torchrun: the local GPU, else gloo)")
    ap.add_argument("--fp8", default=None, choices=FLOAT8_RECIPES, help="torchao float8 training recipe")
    ap.add_argument("--ac", action="store_true", help="activation checkpointing of every block")
    ap.add_argument("--no-compile", dest="compile", action="store_false")
    ap.add_argument("--max-minutes", type=float, default=0.0)
    args = ap.parse_args(argv)
    for name in ("steps", "batch_size", "log_every", "sample_every", "ckpt_every"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1")
    if not (Path(args.data) / "index.json").is_file():
        ap.error(f"{args.data} is not a dataset folder (no index.json); build one with `incasa data emoji`")
    cfg = TrainConfig(data=args.data, out=args.out, preset=args.preset, text_encoder=args.text_encoder,
                      autoencoder=args.autoencoder,
                      steps=args.steps, batch_size=args.batch_size, lr=args.lr, warmup=args.warmup,
                      ema_decay=args.ema_decay, log_every=args.log_every, sample_every=args.sample_every,
                      ckpt_every=args.ckpt_every, seed=args.seed, device=args.device)
    scale = ScaleConfig(fp8=args.fp8, activation_checkpointing=args.ac, compile=args.compile,
                        max_minutes=args.max_minutes)
    try:
        train_distributed(cfg, scale)
    except (ValueError, RuntimeError, FileNotFoundError) as e:
        print(f"Error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
