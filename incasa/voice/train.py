"""Training the voice (acoustic model + vocoder) from a corpus folder: one visible loop, top to bottom.

setup   corpus in: a folder with manifest.jsonl (see data.py), or an LJSpeech-layout folder (metadata.csv + wavs/,
        force-aligned into out/corpus first), or an empty folder with --build-corpus (festival distillation).
        Features (mels, per-phone pitch and energy) are computed once into memory. The texts of the last
        `holdout` sentences are never trained on: eval.py measures intelligibility on them.
        Build VoiceModel (acoustic + vocoder), its EMA copy, AdamW; resume from out/train_state.safetensors.
loop    acoustic batch (whole utterances, padded) -> acoustic_loss; vocoder batch (random segments of true mels and
        their audio) -> vocoder_loss; one backward of the sum, clip, AdamW, EMA; log, checkpoint.
end     export the EMA weights (model.safetensors, fp16) with everything speak.py needs in its header, the curve.

Every random draw comes from one torch.Generator whose state is checkpointed, and the utterance order of epoch e
is a permutation drawn from seed + e, so a resumed run repeats the uninterrupted run's losses exactly.
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
from incasa.train.checkpoint import load_training_state, read_metadata, save_training_state, save_weights
from incasa.train.ema import ema_decay_at, ema_update
from incasa.train.metrics import MetricsLog, plot_curve
from incasa.train.schedule import lr_at
from incasa.voice import data as vdata
from incasa.voice.model import ACOUSTIC_PRESETS, AcousticConfig, VoiceModel, acoustic_loss
from incasa.voice.vocoder import HOP, VOCODER_PRESETS, vocoder_loss

SENTENCES = Path(__file__).with_name("sentences_en.txt")


@dataclass(frozen=True)
class TrainConfig:
    data: str  # corpus folder (manifest.jsonl), LJSpeech-layout folder, or a folder to build with build_corpus
    out: str  # run folder: train_state.safetensors, model.safetensors, metrics.jsonl, curve.png
    preset: str = "small"  # acoustic + vocoder size (tiny / small / base)
    build_corpus: bool = False  # synthesise the festival distillation corpus into `data` first if it is missing
    max_sentences: int = 0  # with build_corpus: use only the first N sentences of sentences_en.txt (0 = all)
    holdout: int = 100  # texts kept out of training for evaluation
    steps: int = 3000
    batch_size: int = 16  # utterances per acoustic batch
    voc_batch: int = 8  # segments per vocoder batch
    voc_frames: int = 32  # frames per vocoder segment (32 * 256 samples = 0.5 s)
    lr: float = 1e-3
    warmup: int = 200
    grad_clip: float = 1.0
    ema_decay: float = 0.999
    log_every: int = 10
    ckpt_every: int = 250
    seed: int = 0
    device: str = "auto"


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def prepare_corpus(cfg: TrainConfig, progress=None) -> Path:
    """Return a folder with manifest.jsonl, building or importing it as the config says."""
    src = Path(cfg.data)
    if (src / "manifest.jsonl").is_file():
        return src
    if (src / "metadata.csv").is_file():
        dst = Path(cfg.out) / "corpus"
        if not (dst / "manifest.jsonl").is_file():
            vdata.build_ljspeech_corpus(src, dst, progress=progress)
        return dst
    if cfg.build_corpus:
        sentences = SENTENCES.read_text(encoding="utf-8").splitlines()
        if cfg.max_sentences:
            sentences = sentences[: cfg.max_sentences]
        vdata.build_festival_corpus(src, sentences, progress=progress)
        return src
    raise ValueError(f"{src} has neither manifest.jsonl nor metadata.csv; pass --build-corpus to synthesise the "
                     "festival distillation corpus there")


def split_holdout(texts: list[str], holdout: int) -> set[str]:
    """The last `holdout` distinct texts in corpus order (the same sentences for every speaker)."""
    distinct = list(dict.fromkeys(texts))
    if holdout >= len(distinct):
        raise ValueError(f"holdout {holdout} leaves nothing to train on ({len(distinct)} distinct texts)")
    return set(distinct[len(distinct) - holdout:]) if holdout else set()


def collate_acoustic(f: vdata.Features, idx: list[int], spk_id: dict[str, int], device) -> dict[str, torch.Tensor]:
    B, N = len(idx), max(len(f.phones[i]) for i in idx)
    T = max(len(f.mels[i]) for i in idx)
    out = {k: torch.zeros(B, N, dtype=torch.long) for k in ("phones", "durations")}
    out.update({k: torch.zeros(B, N) for k in ("pitch", "energy")})
    out["mel"] = torch.full((B, vdata.N_MELS, T), float(np.log(1e-5)))
    for b, i in enumerate(idx):
        n, t = len(f.phones[i]), len(f.mels[i])
        out["phones"][b, :n] = torch.from_numpy(f.phones[i])
        out["durations"][b, :n] = torch.from_numpy(f.durations[i])
        out["pitch"][b, :n] = torch.from_numpy(f.pitch[i])
        out["energy"][b, :n] = torch.from_numpy(f.energy[i])
        out["mel"][b, :, :t] = torch.from_numpy(f.mels[i].astype(np.float32)).T
    out["speaker"] = torch.tensor([spk_id[f.speakers[i]] for i in idx])
    return {k: v.to(device) for k, v in out.items()}


def collate_vocoder(f: vdata.Features, idx: list[int], starts: list[int], frames: int, device):
    mel = torch.stack([torch.from_numpy(f.mels[i][s: s + frames].astype(np.float32)).T for i, s in zip(idx, starts)])
    wav = torch.stack([torch.from_numpy(f.wavs[i][s * HOP: (s + frames) * HOP].astype(np.float32) / 32767)
                       for i, s in zip(idx, starts)])
    return mel.to(device), wav.to(device)


def train(cfg: TrainConfig, *, console=None, features: vdata.Features | None = None) -> dict:
    """Run (or resume) training. features: already computed load_features(corpus) of this corpus (saves the
    feature pass when several runs share a corpus)."""
    if cfg.preset not in ACOUSTIC_PRESETS:
        raise ValueError(f"unknown preset {cfg.preset!r}; choose from {', '.join(ACOUSTIC_PRESETS)}")
    device = _device(cfg.device)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(cfg.seed)

    # ---- data
    with Progress(console=console, transient=True) as p:
        corpus = prepare_corpus(cfg, progress=p)
        feats = features if features is not None else vdata.load_features(corpus, progress=p)
    held = split_holdout([r["text"] for r in vdata.read_manifest(corpus)], cfg.holdout)
    train_idx = [i for i, r in enumerate(vdata.read_manifest(corpus)) if r["text"] not in held]
    # vocoder segments need at least voc_frames frames
    voc_idx = [i for i in train_idx if len(feats.mels[i]) > cfg.voc_frames]
    spk_id = {s: i for i, s in enumerate(feats.speaker_names)}
    data_version = hashlib.sha256((corpus / "manifest.jsonl").read_bytes()).hexdigest()[:16]

    # ---- model, EMA, optimiser
    acfg = AcousticConfig(num_phones=len(vdata.PHONES), num_speakers=len(spk_id), **ACOUSTIC_PRESETS[cfg.preset])
    vcfg = VOCODER_PRESETS[cfg.preset]
    model = VoiceModel(acfg, vcfg).to(device)
    ema = copy.deepcopy(model).requires_grad_(False)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.98), weight_decay=0.0)
    gen = torch.Generator().manual_seed(cfg.seed)  # CPU generator: draws are indices, used on the host
    meta = {"kind": "incasa-voice", "incasa_version": __version__, "acoustic": asdict(acfg), "vocoder": asdict(vcfg),
            "preset": cfg.preset, "speakers": feats.speaker_names, "pitch_stats": feats.pitch_stats,
            "phones": vdata.PHONES, "sample_rate": vdata.SAMPLE_RATE, "hop": HOP, "data_version": data_version,
            "train": asdict(cfg), "num_utterances": len(train_idx), "holdout_texts": len(held)}
    state_path = out / "train_state.safetensors"
    step = 0
    if state_path.exists():
        prev = read_metadata(state_path)
        if prev["acoustic"] != meta["acoustic"] or prev["vocoder"] != meta["vocoder"] \
                or prev["data_version"] != data_version:
            raise ValueError(f"{state_path} was trained with another model or data; use a new --out folder")
        step = load_training_state(state_path, model=model, ema=ema, optimizer=opt, generators={"train": gen})["step"]
    log = MetricsLog(out / "metrics.jsonl", resume_step=step if step else None)

    def acoustic_indices(step: int) -> list[int]:
        epoch, pos = divmod(step * cfg.batch_size, len(train_idx))
        perm = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        idx = perm[pos: pos + cfg.batch_size].tolist()
        if len(idx) < cfg.batch_size:  # wrap into the next epoch's order
            nxt = torch.randperm(len(train_idx), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch + 1))
            idx += nxt[: cfg.batch_size - len(idx)].tolist()
        return [train_idx[i] for i in idx]

    columns = [TextColumn("[bold]train voice"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[info]}"),
               TimeRemainingColumn()]
    window: list[dict] = []
    t0, start_step = time.time(), step
    with Progress(*columns, console=console) as progress:
        task = progress.add_task("train", total=cfg.steps, completed=step, info="")
        while step < cfg.steps:
            batch = collate_acoustic(feats, acoustic_indices(step), spk_id, device)
            pick = torch.randint(len(voc_idx), (cfg.voc_batch,), generator=gen).tolist()
            vi = [voc_idx[i] for i in pick]
            starts = [int(torch.randint(len(feats.mels[i]) - cfg.voc_frames, (1,), generator=gen)) for i in vi]
            mel_seg, wav_seg = collate_vocoder(feats, vi, starts, cfg.voc_frames, device)
            lr = lr_at(step, base=cfg.lr, warmup=cfg.warmup, total=cfg.steps)
            for g in opt.param_groups:
                g["lr"] = lr
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
                a_loss, parts = acoustic_loss(model.acoustic, batch)
                wav_pred = model.vocoder(mel_seg)
            v_loss = vocoder_loss(wav_pred.float(), wav_seg)  # STFT losses in fp32
            loss = a_loss + v_loss
            opt.zero_grad(set_to_none=True)
            loss.backward()
            grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            ema_update(ema, model, ema_decay_at(step, cfg.ema_decay))
            step += 1
            window.append({"loss": loss.item(), "acoustic": a_loss.item(), "vocoder": v_loss.item(), **parts})
            if step % cfg.log_every == 0 or step == cfg.steps:
                avg = {k: float(np.mean([w[k] for w in window])) for k in window[0]}
                log.log(step=step, **avg, lr=lr, grad_norm=float(grad_norm),
                        steps_per_s=(step - start_step) / (time.time() - t0))
                progress.update(task, info=f"loss {avg['loss']:.3f} (mel {avg['mel']:.3f}, voc {avg['vocoder']:.3f})")
                window = []
            progress.update(task, completed=step)
            if step % cfg.ckpt_every == 0 or step == cfg.steps:
                save_training_state(state_path, model=model, ema=ema, optimizer=opt, generators={"train": gen},
                                    metadata={**meta, "step": step})

    save_weights(ema, out / "model.safetensors", {**meta, "step": step})
    if (out / "metrics.jsonl").stat().st_size:
        plot_curve(out / "metrics.jsonl", out / "curve.png", key="loss", title="voice training loss (acoustic + vocoder)")
    (out / "train_command.json").write_text(json.dumps(asdict(cfg), indent=1))
    return {"step": step, "out": str(out), "seconds": time.time() - t0}
