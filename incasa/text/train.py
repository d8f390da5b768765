"""Training the mixture-of-experts language model: one visible loop, top to bottom.

setup   read every document of the data folder, split 1 % off for validation by content hash, train (or reuse)
        the byte-level BPE tokenizer, pack both splits into token streams with loss masks (cached in the run
        folder), build the model, its EMA copy and AdamW, and resume from out/train_state.safetensors if present
loop    draw batch windows from the stream -> next-token cross-entropy on masked positions + the optional router
        losses -> backward -> clip -> AdamW -> move the experts' balance bias toward uniform load -> EMA;
        log loss, per-expert load max/mean and router entropy; evaluate, answer a probe question, checkpoint
end     export the EMA weights in half precision with the tokenizer inside (model.safetensors), draw the curve

All randomness comes from one torch.Generator whose state is checkpointed with the model, its balance biases,
the optimizer and the EMA, so a resumed run repeats the uninterrupted run's losses exactly (a test checks it).
On CUDA the step runs under bf16 autocast (and torch.compile with --compile); nothing else changes.

Scale path (not built here): the model holds no parallelism code, so FSDP2 (`fully_shard` per Block, the stacked
expert weights [E, 2H, D] sharded along with everything else) and FP8 linears are meant to be applied from
outside by incasa/train/parallelize.py once it exists; expert parallelism (experts split across GPUs with an
all-to-all dispatch around `MoE.experts`) is the step after that.
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch
import torch.nn.functional as F
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from incasa import __version__
from incasa.nn.moe import BIAS_RULES, balance_state_dict, load_balance_state, update_balance_bias
from incasa.text.data import doc_text, is_validation, load_documents, pack
from incasa.text.moe_lm import PRESETS, MoELM, count_params
from incasa.text.tokenizer import load_tokenizer, train_tokenizer
from incasa.train.checkpoint import (load_training_state, read_file, read_metadata, save_file_atomic,
                                     save_training_state, save_weights)
from incasa.train.ema import ema_decay_at, ema_update
from incasa.train.metrics import MetricsLog, plot_curve
from incasa.train.schedule import lr_at

PROBE = [{"role": "user", "content": "What does dog mean?"}]


@dataclass(frozen=True)
class TrainConfig:
    data: str  # folder of .jsonl / .txt (e.g. built by `python -m incasa.text.data`)
    out: str  # run folder: train_state.safetensors, model.safetensors, tokenizer.json, metrics.jsonl, curve.png
    preset: str = "small"
    vocab_size: int = 4096  # BPE vocabulary (the model's embedding follows the tokenizer)
    seq_len: int = 256
    steps: int = 2000
    batch_size: int = 16
    lr: float = 2e-3
    warmup: int = 100
    weight_decay: float = 0.1
    grad_clip: float = 1.0
    ema_decay: float = 0.99
    bias_update_rate: float = 1e-2  # balancing step; DeepSeek-V3 uses 1e-3 over far longer runs than ours
    # sign (DeepSeek-V3) | proportional | adaptive (incasa.nn.moe.bias_step). Proportional: the sign rule's fixed
    # steps dither by ~0.1 in load max/mean at our short runs' rate (benchmarks/text_balance.py)
    bias_update_rule: str = "proportional"
    bias_update_band: float = 0.1  # proportional: relative load error that gets the full step
    bias_load_ema: float = 0.0  # > 0: steer by an EMA of the load (this decay) instead of the last step's
    bias_update_floor: float = 0.1  # adaptive: the smallest step, as a fraction of bias_update_rate
    balance_loss_weight: float | None = None  # None = the preset's value
    z_loss_weight: float | None = None
    tokenizer_chars: int = 20_000_000  # text sampled to learn the BPE merges
    log_every: int = 10
    eval_every: int = 250
    eval_batches: int = 8
    ckpt_every: int = 250
    seed: int = 0
    device: str = "auto"
    compile: bool = False
    max_minutes: float = 0.0  # stop early after this much wall time in this process (0: never); saved as at the end


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_tokens(cfg: TrainConfig, out: Path):
    """-> (tokenizer, {split: (ids, mask)}, data_version). Tokenizer and packed streams are cached in `out`."""
    docs = load_documents(cfg.data)
    val = [d for d in docs if is_validation(d)]
    train_docs = [d for d in docs if not is_validation(d)]
    if not val:  # a tiny folder: hold out its last document so validation still means "unseen text"
        if len(train_docs) < 2:
            raise ValueError(f"{cfg.data} needs at least two documents (one is held out for validation)")
        val = [train_docs.pop()]
    tok_path = out / "tokenizer.json"
    if tok_path.exists():
        tokenizer = load_tokenizer(tok_path)
    else:
        sample, used = [], 0
        for d in random.Random(cfg.seed).sample(train_docs, len(train_docs)):
            if used >= cfg.tokenizer_chars:
                break
            sample.append(doc_text(d))
            used += len(sample[-1])
        tokenizer = train_tokenizer(sample, cfg.vocab_size)
        tokenizer.save(tok_path)
    digest = hashlib.sha256(tokenizer.to_json().encode())
    for d in docs:
        digest.update(json.dumps(d, sort_keys=True, ensure_ascii=False).encode())
    data_version = digest.hexdigest()[:16]
    cache = out / "tokens.safetensors"
    if cache.exists() and read_metadata(cache).get("data_version") == data_version:
        t, _ = read_file(cache)
    else:
        t = {}
        for split, part in (("train", train_docs), ("val", val)):
            ids, mask = pack(part, tokenizer)
            t[f"{split}.ids"], t[f"{split}.mask"] = torch.from_numpy(ids), torch.from_numpy(mask)
        save_file_atomic(t, cache, {"data_version": data_version})
    for split in ("train", "val"):
        if len(t[f"{split}.ids"]) < cfg.seq_len + 2:
            raise ValueError(f"the {split} split has only {len(t[f'{split}.ids'])} tokens; need more than "
                             f"--seq-len {cfg.seq_len} (bring more text or lower --seq-len)")
    streams = {s: (t[f"{s}.ids"].long(), t[f"{s}.mask"]) for s in ("train", "val")}
    return tokenizer, streams, data_version, {"train": len(train_docs), "val": len(val)}


def lm_loss(model, x_BL, y_BL, m_BL) -> tuple[torch.Tensor, torch.Tensor]:
    """-> (masked mean next-token cross-entropy, auxiliary router loss)."""
    logits, aux = model(x_BL)
    ce = F.cross_entropy(logits.flatten(0, 1), y_BL.flatten(), reduction="none")
    m = m_BL.flatten().to(ce.dtype)
    return (ce * m).sum() / m.sum().clamp_min(1.0), aux


def windows(ids, mask, starts, seq_len: int, device):
    idx = starts[:, None] + torch.arange(seq_len + 1)[None]
    x = ids[idx]
    return x[:, :-1].to(device), x[:, 1:].to(device), mask[idx[:, 1:]].to(device)


@torch.no_grad()
def evaluate(model, ids, mask, cfg: TrainConfig, device) -> float:
    """Masked loss over fixed, non-overlapping windows at the start of the validation stream."""
    model.eval()
    n = min(cfg.eval_batches * cfg.batch_size, (len(ids) - 1) // cfg.seq_len)
    starts = torch.arange(n) * cfg.seq_len
    total, count = 0.0, 0.0
    for chunk in starts.split(cfg.batch_size):
        x, y, m = windows(ids, mask, chunk, cfg.seq_len, device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits, _ = model(x)
        ce = F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none")
        total += float((ce * m.flatten()).sum())
        count += float(m.sum())
    model.train()
    return total / max(count, 1.0)


def train(cfg: TrainConfig, *, console=None) -> dict:
    if cfg.preset not in PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}; choose from {', '.join(PRESETS)}")
    if cfg.bias_update_rule not in BIAS_RULES:
        raise ValueError(f"unknown bias update rule {cfg.bias_update_rule!r}; choose from {', '.join(BIAS_RULES)}")
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    # ---- data: tokenizer and packed token streams (cached in the run folder)
    tokenizer, streams, data_version, num_docs = prepare_tokens(cfg, out)
    train_ids, train_mask = streams["train"]

    # ---- model, EMA, optimiser
    mcfg = replace(PRESETS[cfg.preset], vocab_size=tokenizer.vocab_size,
                   max_seq_len=max(PRESETS[cfg.preset].max_seq_len, cfg.seq_len))
    if cfg.balance_loss_weight is not None:
        mcfg = replace(mcfg, balance_loss_weight=cfg.balance_loss_weight)
    if cfg.z_loss_weight is not None:
        mcfg = replace(mcfg, z_loss_weight=cfg.z_loss_weight)
    model = MoELM(mcfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=(0.9, 0.95))
    gen = torch.Generator().manual_seed(cfg.seed)
    meta = {"kind": "incasa-text-moe", "incasa_version": __version__, "lm": asdict(mcfg), "preset": cfg.preset,
            "data_version": data_version, "train": asdict(cfg), "num_documents": num_docs,
            "params": count_params(mcfg)}
    state_path = out / "train_state.safetensors"
    step = 0
    if state_path.exists():
        prev = read_metadata(state_path)
        if prev["lm"] != meta["lm"] or prev["data_version"] != data_version:
            raise ValueError(f"{state_path} was trained with another model or data; use a new --out folder")
        prev = load_training_state(state_path, model=model, ema=ema, optimizer=opt, generators={"train": gen})
        load_balance_state(model, prev.get("balance_state", {}))  # the bias controller's memory (adaptive, EMA)
        step = prev["step"]
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if step else None)
    # with --compile, the network and the loss as one graph: the float32 cast and the 32k-way softmax fuse and the
    # float32 logits are never stored whole (H200, base preset, 16 x 2048 tokens: 110 -> 102 ms per step against the
    # network compiled alone; benchmarks/text_gpu.py --modes model,loss)
    step_loss = torch.compile(lm_loss) if cfg.compile else lm_loss
    num_windows = len(train_ids) - cfg.seq_len - 1

    losses = []
    t0, seen = time.time(), 0
    columns = [TextColumn("[bold]train text"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn()]
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            starts = torch.randint(0, num_windows, (cfg.batch_size,), generator=gen)
            x, y, m = windows(train_ids, train_mask, starts, cfg.seq_len, device)
            lr = lr_at(step, base=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                ce, aux = step_loss(model, x, y, m)
            opt.zero_grad(set_to_none=True)
            (ce + aux).backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            router = update_balance_bias(model, cfg.bias_update_rate, cfg.bias_update_rule, cfg.bias_update_band,
                                         cfg.bias_load_ema, cfg.bias_update_floor)
            ema_update(ema, model, ema_decay_at(step, cfg.ema_decay))
            for b_ema, b in zip(ema.buffers(), model.buffers(), strict=True):  # the balance biases are buffers
                b_ema.copy_(b)
            step += 1
            seen += x.numel()
            losses.append(ce.item())
            if step % cfg.log_every == 0 or step == cfg.steps:
                rate = seen / (time.time() - t0)
                recent = sum(losses[-cfg.log_every:]) / len(losses[-cfg.log_every:])
                log.log(step=step, loss=recent, aux_loss=float(aux.detach()), lr=lr, grad_norm=float(grad_norm),
                        tokens_per_s=rate, **router)
                load = f"  load max/mean {router['load_max_over_mean']:.2f}" if router else ""
                progress.update(task, info=f"loss {recent:.3f}{load}  {rate:.0f} tok/s")
            progress.update(task, completed=step)
            out_of_time = bool(cfg.max_minutes) and time.time() - t0 > 60 * cfg.max_minutes
            if step % cfg.eval_every == 0 or step == cfg.steps or out_of_time:
                val = evaluate(ema, *streams["val"], cfg, device)
                log.log(step=step, val_loss=val, val_ppl=float(torch.tensor(val).exp()),
                        probe=probe_answer(ema, tokenizer))
                progress.console.print(f"step {step}: val loss {val:.3f}")
            if step % cfg.ckpt_every == 0 or step == cfg.steps or out_of_time:
                save_training_state(state_path, model=model, ema=ema, optimizer=opt, generators={"train": gen},
                                    metadata={**meta, "step": step, "balance_state": balance_state_dict(model)})
            if out_of_time:
                progress.console.print(f"stopping at step {step}: --max-minutes {cfg.max_minutes} reached")
                break
    save_weights(ema, out / "model.safetensors", {**meta, "step": step, "tokenizer": tokenizer.to_json()})
    plot_curve(out / "metrics.jsonl", out / "curve.png", title=f"incasa text {cfg.preset}: next-token loss")
    return {"step": step, "losses": losses, "out": str(out)}


def probe_answer(model, tokenizer, max_tokens: int = 40) -> str:
    """Greedy answer to a fixed question: a readable trace of what the model has learned so far."""
    from incasa.text.engine import Sampling, generate

    was_training = model.training
    model.eval()
    try:
        ids = tokenizer.chat_prompt(PROBE)
        return generate(model, tokenizer, [ids], Sampling(max_tokens=max_tokens, temperature=0.0))[0].text
    finally:
        model.train(was_training)
