"""The public voice API: text in, audio out, with the shipped default voice or any checkpoint of ours.

    synthesize(text, voice=..., speed=...)   -> (float32 mono waveform in [-1, 1], sample rate)
    stream(text, voice=..., speed=...)        -> yields one waveform per sentence, as soon as it is ready
    voices(checkpoint)                        -> the speaker names a checkpoint knows
    write_audio(path, audio, sample_rate)     -> WAV / FLAC / MP3 / Opus by the file's extension (libsndfile)

The pipeline: frontend.phonemize (normalise, split, G2P) -> the acoustic model predicts durations, pitch and
energy, then the mel frames of several sentences at once (one padded batch) -> the vocoder turns mels into
samples -> each sentence is cut back to its own length. `speed` divides durations, `pitch` shifts by semitones
(converted with the speaker's log-f0 spread from training), `energy` shifts the z-scored energy.
Loaded models are cached per (checkpoint, device); everything is deterministic (no sampling anywhere).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

DEFAULT_DIR = Path(__file__).with_name("default")
DEFAULT_CHECKPOINT = DEFAULT_DIR / "model.safetensors"
FORMATS = {".wav": ("WAV", "PCM_16"), ".flac": ("FLAC", "PCM_16"), ".mp3": ("MP3", "MPEG_LAYER_III"),
           ".opus": ("OGG", "OPUS"), ".ogg": ("OGG", "OPUS")}
MAX_BATCH = 8  # sentences per model pass: bounds memory for a very long text


@dataclass(frozen=True)
class LoadedVoice:
    model: torch.nn.Module  # VoiceModel, eval mode, fp32
    meta: dict
    speakers: tuple[str, ...]
    sample_rate: int
    hop: int
    device: torch.device


@lru_cache(maxsize=4)
def _load(path: str, mtime: float, device: str) -> LoadedVoice:
    from incasa.train.checkpoint import read_file
    from incasa.voice.model import AcousticConfig, VoiceModel
    from incasa.voice.vocoder import VocoderConfig

    tensors, meta = read_file(path)
    if meta.get("kind") != "incasa-voice":
        raise ValueError(f"{path} is not an incasa voice checkpoint (kind {meta.get('kind')!r})")
    model = VoiceModel(AcousticConfig(**meta["acoustic"]), VocoderConfig(**meta["vocoder"]))
    # a training state holds model.* / ema.* / optim.*: take the EMA weights; an exported model is plain
    if any(k.startswith("ema.") for k in tensors):
        tensors = {k[4:]: v for k, v in tensors.items() if k.startswith("ema.")}
    model.load_state_dict({k: v.float() for k, v in tensors.items()})
    model.eval().to(device)
    return LoadedVoice(model, meta, tuple(meta["speakers"]), int(meta["sample_rate"]), int(meta["hop"]),
                       torch.device(device))


def load_voice(checkpoint: str | Path | None = None, device: str = "cpu") -> LoadedVoice:
    path = Path(checkpoint) if checkpoint else DEFAULT_CHECKPOINT
    if not path.is_file():
        hint = " (the shipped default is missing: train one with `incasa train voice`)" if checkpoint is None else ""
        raise ValueError(f"voice checkpoint {path} does not exist{hint}")
    return _load(str(path.resolve()), path.stat().st_mtime, device)


def voices(checkpoint: str | Path | None = None) -> list[str]:
    return list(load_voice(checkpoint).speakers)


def _speaker_index(lv: LoadedVoice, voice: str | None) -> int:
    if voice is None:
        return 0
    if voice not in lv.speakers:
        raise ValueError(f"unknown voice {voice!r}; this model has: {', '.join(lv.speakers)}")
    return lv.speakers.index(voice)


def _check_controls(speed: float, pitch: float, energy: float) -> None:
    if not (0.25 <= speed <= 4.0):
        raise ValueError(f"speed must be between 0.25 and 4, got {speed}")
    if not (-12 <= pitch <= 12):
        raise ValueError(f"pitch must be between -12 and +12 semitones, got {pitch}")
    if not (-3 <= energy <= 3):
        raise ValueError(f"energy must be between -3 and +3, got {energy}")


@torch.inference_mode()
def _render(lv: LoadedVoice, phone_seqs: list[tuple[str, ...]], speaker: int, speed: float, pitch: float,
            energy: float) -> list[np.ndarray]:
    """One padded batch of sentences through acoustic model + vocoder; one waveform per sentence."""
    from incasa.voice.data import PHONE_ID

    B, N = len(phone_seqs), max(len(p) for p in phone_seqs)
    phones = torch.zeros(B, N, dtype=torch.long)
    for b, seq in enumerate(phone_seqs):
        phones[b, : len(seq)] = torch.tensor([PHONE_ID[p] for p in seq])
    spk = torch.full((B,), speaker, dtype=torch.long)
    name = lv.speakers[speaker]
    std = lv.meta["pitch_stats"][name][1]
    shift_z = pitch * math.log(2) / 12 / std  # semitones -> z-scored log f0 of this speaker
    mel, frames = lv.model.acoustic.infer(phones.to(lv.device), spk.to(lv.device), speed=speed,
                                          pitch_shift=shift_z, energy_shift=energy)
    pad = torch.arange(mel.shape[-1], device=lv.device)[None] >= frames[:, None]
    mel = mel.masked_fill(pad[:, None], math.log(1e-5))  # padded frames -> silence for the vocoder
    wav = lv.model.vocoder(mel).float().clamp(-1, 1).cpu().numpy()
    return [wav[b, : int(frames[b]) * lv.hop] for b in range(B)]


def stream(text: str, *, voice: str | None = None, speed: float = 1.0, pitch: float = 0.0, energy: float = 0.0,
           lang: str = "en", checkpoint: str | Path | None = None, lexicon: dict[str, str] | None = None,
           device: str = "cpu") -> Iterator[np.ndarray]:
    """Yield one float32 waveform per sentence (at load_voice(checkpoint).sample_rate), in order."""
    from incasa.voice.frontend import phonemize

    _check_controls(speed, pitch, energy)
    lv = load_voice(checkpoint, device)
    speaker = _speaker_index(lv, voice)
    for s in phonemize(text, lang, lexicon):
        yield _render(lv, [s.phones], speaker, speed, pitch, energy)[0]


def synthesize(text: str, *, voice: str | None = None, speed: float = 1.0, pitch: float = 0.0, energy: float = 0.0,
               lang: str = "en", checkpoint: str | Path | None = None, lexicon: dict[str, str] | None = None,
               device: str = "cpu") -> tuple[np.ndarray, int]:
    """The whole text as one float32 waveform (sentences batched through the model) and its sample rate.
    Raises ValueError for empty text, an unknown voice or out-of-range controls."""
    from incasa.voice.frontend import phonemize

    _check_controls(speed, pitch, energy)
    lv = load_voice(checkpoint, device)
    speaker = _speaker_index(lv, voice)
    sentences = phonemize(text, lang, lexicon)
    # sorting by length keeps padding small inside each batch; the output keeps the text's order
    order = sorted(range(len(sentences)), key=lambda i: len(sentences[i].phones))
    pieces: list[np.ndarray | None] = [None] * len(sentences)
    for start in range(0, len(order), MAX_BATCH):
        idx = order[start: start + MAX_BATCH]
        for i, w in zip(idx, _render(lv, [sentences[i].phones for i in idx], speaker, speed, pitch, energy)):
            pieces[i] = w
    return np.concatenate(pieces).astype(np.float32), lv.sample_rate


def audio_format(path: str | Path) -> tuple[str, str]:
    ext = Path(path).suffix.lower()
    if ext not in FORMATS:
        raise ValueError(f"unsupported audio format {ext or '(no extension)'!r}; use one of {', '.join(FORMATS)}")
    return FORMATS[ext]


def write_audio(path: str | Path, audio: np.ndarray, sample_rate: int) -> None:
    """Write atomically (temp file + rename) in the format the extension names."""
    import os
    import uuid

    import soundfile as sf

    fmt, subtype = audio_format(path)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a unique name soundfile creates (so the file gets the usual mode), not mkstemp's 0600 file
    tmp = str(path.with_name(f".{path.name}.{uuid.uuid4().hex}.tmp"))
    try:
        sf.write(tmp, np.clip(audio, -1, 1), sample_rate, format=fmt, subtype=subtype)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
