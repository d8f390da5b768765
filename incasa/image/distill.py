"""A few-step student distilled from an image checkpoint: reflow with guidance distillation (2-rectified flow).

The teacher (incasa/image/flow.py) draws a picture with 25 Euler steps and classifier-free guidance: 50 network
evaluations. Its trajectories are curved (guidance bends them further), so with 4 Euler steps it falls apart.
Rectified flow's *reflow* (Liu et al. 2022, "Flow Straight and Fast"; InstaFlow, Liu et al. 2023) straightens them:

pairs    the teacher maps noise z to an image x = teacher(z, caption) with its full guided sampler. Each (z, x) is a
         deterministic coupling: the same z always gives the same x. Stored in chunks (one atomic file each), so a
         killed run keeps what it drew. Captions are the training captions, each used several times (rounds of
         permutations), with fresh noise each time.
reflow   the student starts as a copy of the teacher and learns the flow of the straight lines between the stored
         z and x (the training objective of flow.py, with eps = z and x0 = x instead of independent draws). On a
         deterministic coupling the best velocity field is the straight line itself, so few Euler steps suffice.
         The captions are never dropped and the pairs already carry the teacher's guidance, so the student samples
         WITHOUT classifier-free guidance: one network evaluation per step (guidance distillation for free).
sampling flow.sample with guidance 1.0 and 1, 2 or 4 steps on the same shifted schedule. The checkpoint records
         {"sampler": {"steps": 4, "guidance": 1.0}} so `incasa generate` and `incasa eval image` use it by default.

One deviation from plain reflow: t is drawn half from the training distribution (logit-normal, shifted) and half
from the student's own sampling grid (the nonzero times of the `student_steps` schedule; the 2- and 1-step grids
are subsets of the 4-step one). The logit-normal almost never draws t near 1, yet t = 1 is the only time the 1-step
sampler ever evaluates, and the x0-parameterised velocity loss |x - x0_hat|^2 / t^2 weighs small t most.

Progress is measured on held-out pairs (the last `val_pairs` of the pair set, never trained on): the mean squared
error between the student's k-step picture and the teacher's 25-step picture from the same noise (val_mse_k).

Measured on the shipped default (benchmarks/image_fewstep.py, results/image_fewstep.json; 131,072 pairs drawn in 2 min
and 3,471 student steps in 3.6 min on one H200): on 375 pictures of the eval suite the student at 4 steps without
guidance (4 network evaluations) matched the teacher at 25 guided steps (50) in prompt fidelity (top-1 0.29 vs 0.29)
and Fréchet distance on the judge's features (65.1 vs 65.7), where the teacher cut to 4 guided steps fell to 0.23;
at 1 step fidelity held (0.29) but the distance rose to 78.6 and variants became more alike.

Shapes: z, x [P, C, H, W] (P pairs); caption features as in train.py (tokens [B, L, E], mask [B, L], pooled [B, E]).
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import math
import tarfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from incasa import __version__
from incasa.image.autoencoder import Autoencoder
from incasa.image.dit import DiT, DiTConfig
from incasa.image.flow import T_MIN, sample, time_shift, velocity
from incasa.image.latent import checkpoint_tensors, sample_size, split_checkpoint
from incasa.image.text_encoder import load_text_encoder
from incasa.image.train import _device, cached_caption_features, gather_cond, save_grid
from incasa.train.checkpoint import (load_training_state, read_file, read_metadata, save_file_atomic,
                                     save_training_state, save_weights)
from incasa.train.ema import ema_decay_at, ema_update
from incasa.train.metrics import MetricsLog, plot_curve
from incasa.train.schedule import lr_at

DEFAULT_TEACHER = Path(__file__).parent / "default" / "model.safetensors"
FEW_STEPS = (1, 2, 4)  # the student step counts measured on the held-out pairs


@dataclass(frozen=True)
class DistillConfig:
    data: str  # the emoji dataset folder the teacher was trained on (its captions are the prompts)
    out: str  # run folder: pairs/, captions.safetensors, train_state.safetensors, model.safetensors, metrics.jsonl
    teacher: str = ""  # an image model.safetensors; "" = the shipped default
    pairs: int = 4096  # (noise, teacher picture) couplings to draw, rounded up to whole chunks
    chunk: int = 256  # pairs per stored file = the teacher's batch (on a GPU: big)
    teacher_steps: int = 25
    teacher_guidance: float = 4.0
    steps: int = 2000  # student optimiser steps
    batch_size: int = 64
    lr: float = 1e-4  # a fine-tune of the teacher: well below its training rate
    warmup: int = 100
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    grid_share: float = 0.5  # share of t drawn from the student's sampling grid instead of the logit-normal
    student_steps: int = 4  # the sampler default written into the checkpoint
    val_pairs: int = 256  # held-out pairs at the end of the set (at most 1/8 of it)
    log_every: int = 10
    sample_every: int = 500  # grid PNG + held-out val_mse_k
    ckpt_every: int = 500
    seed: int = 0
    device: str = "auto"
    max_seconds: float = 0.0  # stop cleanly after this long (pairs kept; training state saved); 0 = no limit

    def __post_init__(self) -> None:
        for name in ("pairs", "chunk", "teacher_steps", "steps", "batch_size", "student_steps", "log_every",
                     "sample_every", "ckpt_every"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or self.max_seconds < 0 or self.warmup < 0 or self.val_pairs < 0:
            raise ValueError("lr must be > 0, and warmup, val-pairs and max-seconds >= 0")
        if not 0.0 <= self.grid_share <= 1.0:
            raise ValueError(f"grid-share must be in [0, 1], got {self.grid_share}")
        if not 0.0 <= self.ema_decay < 1.0:
            raise ValueError(f"ema-decay must be in [0, 1), got {self.ema_decay}")

    @property
    def num_chunks(self) -> int:
        return math.ceil(self.pairs / self.chunk)

    @property
    def num_val(self) -> int:
        return min(self.val_pairs, self.num_chunks * self.chunk // 8)


# ---------------------------------------------------------------- the teacher and the prompts


def load_teacher(path: str | Path, device: torch.device) -> tuple[DiT, dict, str, Autoencoder | None]:
    """The teacher's DiT (fp32, eval), its metadata, the first 10 hex digits of its sha256 (as generate's), and
    its autoencoder for a latent teacher (the student draws the same latents and carries the same autoencoder)."""
    path = Path(path) if path else DEFAULT_TEACHER
    tensors, meta = read_file(path)
    if meta.get("kind") != "incasa-image-dit" or "optim_param_groups" in meta:
        raise ValueError(f"{path} is not an exported incasa image checkpoint (a model.safetensors from "
                         f"`incasa train image`)")
    dit_tensors, ae = split_checkpoint(tensors, meta)
    model = DiT(DiTConfig(**meta["dit"]))
    model.load_state_dict({k: v.float() for k, v in dit_tensors.items()})
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:10]
    return (model.to(device).eval().requires_grad_(False), meta, digest,
            ae.to(device) if ae is not None else None)


def load_captions(data: Path) -> tuple[list[str], str]:
    """The sorted unique training captions and the data version, reading only the JSON members of the shards."""
    index_path = Path(data) / "index.json"
    if not index_path.is_file():
        raise FileNotFoundError(f"{data} is not an emoji dataset (no index.json); build one with `incasa data emoji`")
    index = json.loads(index_path.read_text())
    captions: set[str] = set()
    for shard in index["shards"]["train"]:
        with tarfile.open(Path(data) / shard) as tf:
            for m in tf.getmembers():
                if m.name.endswith(".json"):
                    captions.update(json.load(io.BytesIO(tf.extractfile(m).read()))["captions"])
    captions.discard("")
    if not captions:
        raise ValueError(f"{data} has no training captions")
    return sorted(captions), index["data_version"]


def pair_caption_ids(num_captions: int, num_pairs: int, seed: int) -> torch.Tensor:
    """Caption of pair i: rounds of permutations of all captions, so every caption gets about as many seeds."""
    rounds = math.ceil(num_pairs / num_captions)
    perms = [torch.randperm(num_captions, generator=torch.Generator().manual_seed(seed * 7919 + r))
             for r in range(rounds)]
    return torch.cat(perms)[:num_pairs]


def chunk_noise(chunk_index: int, size: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """The noise of one chunk, from its own CPU generator: independent of the device and of the other chunks."""
    g = torch.Generator().manual_seed(seed * 1_000_003 + chunk_index)
    return torch.randn(size, *shape, generator=g)


# ---------------------------------------------------------------- phase 1: the couplings


@torch.no_grad()
def teacher_pairs(teacher, cond: dict, uncond: dict, noise: torch.Tensor, *, steps: int, guidance: float,
                  autocast: bool) -> torch.Tensor:
    """x = the teacher's full guided sampler from `noise`, clamped to the pixel range."""
    with torch.autocast(noise.device.type, dtype=torch.bfloat16, enabled=autocast):
        x = sample(teacher, noise, cond, uncond, steps=steps, guidance=guidance)
    return x.float().clamp(-1, 1)


def make_pairs(cfg: DistillConfig, teacher, encoder, table: dict, row_of_pair: torch.Tensor, key: str,
               device: torch.device, shape: tuple[int, ...], deadline: float, console=None):
    """Draw the missing chunks (or keep those already drawn with the same key); returns (z, x) or None if out of
    time. z and x are fp16 [P, C, H, W] on `device`."""
    pair_dir = Path(cfg.out) / "pairs"
    pair_dir.mkdir(parents=True, exist_ok=True)
    for path in sorted(pair_dir.glob("chunk_*.safetensors")):  # refuse a foreign run before drawing anything
        if read_metadata(path).get("key") != key:
            raise ValueError(f"{path} was drawn by another teacher or with other settings; use a new --out")
    on_cuda = device.type == "cuda"
    gen_model = torch.compile(teacher) if on_cuda else teacher
    null = {k: v.to(device) for k, v in encoder.encode([""]).items()}
    z_chunks, x_chunks = [], []
    columns = [TextColumn("[bold]teacher pairs"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn()]
    t0, drawn = time.time(), 0
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("pairs", total=cfg.num_chunks * cfg.chunk, info="")
        for c in range(cfg.num_chunks):
            path = pair_dir / f"chunk_{c:05d}.safetensors"
            if path.exists():
                tensors, _ = read_file(path)
            else:
                if time.time() > deadline:
                    return None
                z = chunk_noise(c, cfg.chunk, shape, cfg.seed).to(device)
                rows = row_of_pair[c * cfg.chunk:(c + 1) * cfg.chunk].to(device)
                cond = gather_cond(table, rows, trim=not on_cuda)
                uncond = {k: v.expand(len(rows), *v.shape[1:]) for k, v in null.items()}
                x = teacher_pairs(gen_model, cond, uncond, z, steps=cfg.teacher_steps, guidance=cfg.teacher_guidance,
                                  autocast=on_cuda)
                tensors = {"z": z.half(), "x": x.half()}
                save_file_atomic(tensors, path, {"key": key, "chunk": c})
                drawn += cfg.chunk
            z_chunks.append(tensors["z"].to(device))
            x_chunks.append(tensors["x"].to(device))
            rate = drawn / max(time.time() - t0, 1e-6)
            progress.update(task, advance=cfg.chunk, info=f"{rate:.0f} pairs/s" if drawn else "")
    return torch.cat(z_chunks), torch.cat(x_chunks)


# ---------------------------------------------------------------- phase 2: reflow


def sampler_grid(student_steps: int, num_tokens: int) -> torch.Tensor:
    """The nonzero times the `student_steps` Euler sampler evaluates (flow.sample's shifted schedule)."""
    return time_shift(torch.linspace(1.0, 0.0, student_steps + 1), num_tokens)[:-1]


def reflow_loss(model, x0: torch.Tensor, eps: torch.Tensor, cond: dict, num_tokens: int, *,
                generator: torch.Generator, grid_t: torch.Tensor | None = None, grid_share: float = 0.0):
    """flow.rf_loss on a given coupling: the straight line from eps (t = 1) to x0 (t = 0), t drawn from the
    training distribution, or with probability grid_share from `grid_t` (the student's sampling times)."""
    B = x0.shape[0]
    g_dev = generator.device
    t = time_shift(torch.sigmoid(torch.randn(B, generator=generator, device=g_dev)), num_tokens)
    if grid_t is not None and grid_share > 0:
        on_grid = torch.rand(B, generator=generator, device=g_dev) < grid_share
        pick = torch.randint(len(grid_t), (B,), generator=generator, device=g_dev)
        t = torch.where(on_grid, grid_t.to(g_dev)[pick], t)
    t = t.to(x0.device)
    tb = t.view(B, 1, 1, 1).to(x0.dtype)
    x_t = (1 - tb) * x0 + tb * eps
    v_hat = velocity(model, x_t, t, cond["tokens"], cond["mask"], cond["pooled"])
    v = (x_t - x0) / t.clamp(min=T_MIN).view(B, 1, 1, 1)  # = eps - x0 away from the clamp
    return ((v_hat.float() - v.float()) ** 2).mean()


@torch.no_grad()
def fewstep_mse(model, z: torch.Tensor, x: torch.Tensor, cond: dict, steps: tuple[int, ...] = FEW_STEPS,
                batch: int = 256) -> dict[str, float]:
    """Mean squared pixel error between the k-step unguided picture from z and the teacher's picture x."""
    out = {}
    for k in steps:
        err = 0.0
        for i in range(0, len(z), batch):
            c = {n: v[i:i + batch] for n, v in cond.items()}
            y = sample(model, z[i:i + batch].float(), c, None, steps=k, guidance=1.0).float().clamp(-1, 1)
            err += float(((y - x[i:i + batch].float()) ** 2).sum())
        out[f"val_mse_{k}"] = err / x[:len(z)].numel()
    return out


def distill(cfg: DistillConfig, *, console=None, encoder=None) -> dict:
    """Draw (or resume) the teacher's pairs, then train (or resume) the student; export it with its sampler.
    encoder: an already loaded text encoder (e.g. the GPU kit's cut-down MiniLM) whose spec equals the teacher's."""
    t_start = time.time()
    deadline = t_start + cfg.max_seconds if cfg.max_seconds > 0 else float("inf")
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)
    teacher, tmeta, thash, ae = load_teacher(cfg.teacher, device)
    if encoder is None:
        encoder = load_text_encoder(tmeta["text_encoder"]).to(device)
    elif encoder.spec != tmeta["text_encoder"]:
        raise ValueError(f"the given encoder is {encoder.spec!r} but the teacher used {tmeta['text_encoder']!r}")
    captions, data_version = load_captions(Path(cfg.data))
    if tmeta.get("data_version") not in (None, data_version):
        raise ValueError(f"the teacher was trained on data {tmeta['data_version']!r} but {cfg.data} is "
                         f"{data_version!r}; pass the teacher's dataset with --data")
    H, W = sample_size(tmeta)  # what the DiT draws: latents for a latent teacher
    C, P = tmeta["dit"]["in_channels"], tmeta["dit"]["patch_size"]
    num_tokens = (H // P) * (W // P)
    total = cfg.num_chunks * cfg.chunk

    # ---- prompts: the caption of every pair, and the features of the captions used (computed once, cached)
    cap_of_pair = pair_caption_ids(len(captions), total, cfg.seed)
    used, row_of_pair = torch.unique(cap_of_pair, return_inverse=True)
    used_captions = [captions[i] for i in used.tolist()]
    table = cached_caption_features(encoder, used_captions, out / "captions.safetensors", console)
    table = {k: v.to(device) for k, v in table.items()}

    # ---- phase 1: the teacher's couplings
    pair_key = hashlib.sha256(json.dumps([thash, data_version, cfg.seed, cfg.chunk, cfg.teacher_steps,
                                          cfg.teacher_guidance]).encode()).hexdigest()
    pairs = make_pairs(cfg, teacher, encoder, table, row_of_pair, pair_key, device, (C, H, W), deadline, console)
    if pairs is None:
        done = len(list((out / "pairs").glob("chunk_*.safetensors")))
        return {"step": 0, "finished": False, "pair_chunks": done, "out": str(out),
                "message": f"out of time after {done} of {cfg.num_chunks} pair chunks; re-run to resume"}
    z_all, x_all = pairs
    pair_seconds = time.time() - t_start
    if device.type == "cuda":
        torch.cuda.empty_cache()
    num_val = cfg.num_val
    num_train = total - num_val
    row_of_pair = row_of_pair.to(device)
    val_cond = gather_cond(table, row_of_pair[num_train:]) if num_val else {}
    z_val, x_val = z_all[num_train:], x_all[num_train:]

    # ---- phase 2: the student, its EMA and AdamW; resume if a state exists
    student = copy.deepcopy(teacher).float().train().requires_grad_(True)
    ema = copy.deepcopy(student).requires_grad_(False)
    opt = torch.optim.AdamW(student.parameters(), lr=cfg.lr, betas=(0.9, 0.99), weight_decay=0.0)
    gen = torch.Generator(device).manual_seed(cfg.seed)
    grid_t = sampler_grid(cfg.student_steps, num_tokens)
    train_key = hashlib.sha256(json.dumps([pair_key, cfg.pairs, cfg.val_pairs]).encode()).hexdigest()
    meta = {**{k: tmeta[k] for k in ("kind", "dit", "preset", "text_encoder", "image_size", "sample_size",
                                     "autoencoder", "data_version") if k in tmeta},
            "incasa_version": __version__, "name": f"{tmeta.get('name') or 'incasa-' + tmeta.get('preset', 'dit')}"
            f"-reflow{cfg.student_steps}", "distill": asdict(cfg), "train_key": train_key,
            "teacher": {"model_hash": thash, "name": tmeta.get("name"), "step": tmeta.get("step")},
            "sampler": {"steps": cfg.student_steps, "guidance": 1.0}, "num_pairs": total,
            "train_device": (f"{torch.cuda.get_device_name(device)}, bf16 autocast, torch.compile"
                             if device.type == "cuda" else "cpu") + f" (torch {torch.__version__})"}
    state_path = out / "train_state.safetensors"
    step = 0
    if state_path.exists():
        prev = read_metadata(state_path)
        if prev.get("train_key") != train_key:
            raise ValueError(f"{state_path} was trained on other pairs or settings; use a new --out folder")
        step = load_training_state(state_path, model=student, ema=ema, optimizer=opt,
                                   generators={"train": gen})["step"]
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if step else None)
    compiled = torch.compile(student) if device.type == "cuda" else student
    if step == 0:
        before = fewstep_mse(ema.eval(), z_val, x_val, val_cond) if num_val else {}
        log.log(step=0, **before, pairs=total, pair_seconds=round(pair_seconds, 2))

    def batch_indices(step: int) -> torch.Tensor:  # epoch e is a permutation drawn from seed + e (exact resume)
        bs = cfg.batch_size
        epoch, pos = divmod(step * bs, num_train)
        perm = torch.randperm(num_train, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        idx = perm[pos:pos + bs]
        if len(idx) < bs:
            nxt = torch.randperm(num_train, generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch + 1))
            idx = torch.cat([idx, nxt[:bs - len(idx)]])
        return idx

    probe = torch.arange(num_train, total)[:8] if num_val else torch.arange(min(8, total))
    losses, last_val = [], {}
    t0, seen = time.time(), 0
    columns = [TextColumn("[bold]distill"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn()]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("distill", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            idx = batch_indices(step).to(device)
            cond = gather_cond(table, row_of_pair[idx], trim=device.type != "cuda")
            lr = lr_at(step, base=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                loss = reflow_loss(compiled, x_all[idx].float(), z_all[idx].float(), cond, num_tokens,
                                   generator=gen, grid_t=grid_t, grid_share=cfg.grid_share)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(student.parameters(), cfg.grad_clip)
            opt.step()
            ema_update(ema, student, ema_decay_at(step, cfg.ema_decay))
            step += 1
            seen += len(idx)
            losses.append(loss.detach())
            out_of_time = time.time() > deadline
            end = step == cfg.steps or out_of_time
            row = {}
            if step % cfg.sample_every == 0 or end:
                last_val = fewstep_mse(ema.eval(), z_val, x_val, val_cond) if num_val else {}
                row.update(last_val)
                pc = gather_cond(table, row_of_pair[probe.to(device)])
                zp = z_all[probe.to(device)].float()
                rows = [x_all[probe.to(device)].float()] + [sample(ema, zp, pc, None, steps=k, guidance=1.0)
                                                             for k in sorted(FEW_STEPS, reverse=True)]
                grid = torch.cat(rows)
                if ae is not None:
                    with torch.no_grad():
                        grid = ae.decode(grid)
                save_grid(grid, out / "samples" / f"step_{step:07d}.png", ncol=len(probe))
            if step % cfg.log_every == 0 or end:
                losses[-cfg.log_every:] = [float(v) for v in losses[-cfg.log_every:]]  # one host sync per log
                rate = seen / (time.time() - t0)
                mean = float(np.mean(losses[-cfg.log_every:]))
                log.log(step=step, loss=mean, lr=lr, grad_norm=float(grad_norm), pairs_per_s=rate,
                        elapsed_s=round(time.time() - t0, 2), **row)
                info = f"loss {mean:.4f}  {rate:.0f} pairs/s"
                if last_val:
                    info += "  mse@1/2/4 " + "/".join(f"{last_val[f'val_mse_{k}']:.4f}" for k in FEW_STEPS)
                progress.update(task, info=info)
            elif row:
                log.log(step=step, **row)
            progress.update(task, completed=step)
            if step % cfg.ckpt_every == 0 or end:
                save_training_state(state_path, model=student, ema=ema, optimizer=opt, generators={"train": gen},
                                    metadata={**meta, "step": step})
            if out_of_time:
                break
    if not last_val and num_val:  # a resumed run that had already finished
        last_val = fewstep_mse(ema.eval(), z_val, x_val, val_cond)
    result_meta = {**meta, "step": step, "val": last_val, "pair_seconds": round(pair_seconds, 2),
                   "train_seconds": round(time.time() - t0, 2)}
    save_weights(ema, out / "model.safetensors", result_meta, extra=checkpoint_tensors(ae))
    plot_curve(out / "metrics.jsonl", out / "curve.png", title="incasa image reflow student: loss on teacher pairs")
    return {"step": step, "finished": step >= cfg.steps, "losses": [float(v) for v in losses], "val": last_val,
            "out": str(out), "pairs": total, "pair_seconds": pair_seconds}
