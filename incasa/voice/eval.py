"""Intelligibility: word error rate of an ASR system listening to our voice, relative to its teachers.

pocketsphinx (its PyPI wheel carries an English acoustic model, dictionary and language model; offline)
transcribes held-out sentences spoken (a) by our model and (b) by the festival teacher voice the model imitates
(the corpus holds the teachers' audio of the held-out texts too: they were synthesised, just never trained on).
jiwer scores both against the text. The ratio model WER / teacher WER says how much intelligibility the
distillation lost (1.0 = as clear as the teacher). With ``copy_synthesis`` a third reading splits that loss: the
teacher's own audio -> its log-mel -> our vocoder, so the acoustic model is out of the loop and what is lost there
is the vocoder's. pocketsphinx is a weak recogniser (it misses ~7-10% of the
words of the clean teachers), so the ratio is a coarse gauge, not a fine one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class WerResult:
    speaker: str
    num_sentences: int
    model_wer: float
    teacher_wer: float
    vocoder_wer: float | None = None  # teacher mel -> our vocoder (copy synthesis), when asked for

    @property
    def ratio(self) -> float:
        return self.model_wer / max(self.teacher_wer, 1e-9)


def _clean(text: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"[^a-z' ]", " ", text.lower())).strip()


class Recogniser:
    """One pocketsphinx decoder with the wheel's default en-us model (16 kHz input)."""

    def __init__(self):
        from pocketsphinx import Decoder

        self.decoder = Decoder(samprate=16000, loglevel="FATAL")

    def transcribe(self, wav_16k: np.ndarray) -> str:
        pcm = (np.clip(wav_16k, -1, 1) * 32767).astype(np.int16).tobytes()
        self.decoder.start_utt()
        self.decoder.process_raw(pcm, full_utt=True)
        self.decoder.end_utt()
        hyp = self.decoder.hyp()
        return _clean(hyp.hypstr) if hyp is not None else ""


def wer(references: list[str], hypotheses: list[str]) -> float:
    import jiwer

    return float(jiwer.wer([_clean(r) for r in references], [h if h else "<empty>" for h in hypotheses]))


def copy_synthesis(lv, wav_16k: np.ndarray) -> np.ndarray:
    """Teacher audio -> log-mel -> our vocoder: the waveform our vocoder makes from a perfect mel."""
    import torch

    from incasa.voice.vocoder import mel_spectrogram

    with torch.inference_mode():
        mel = mel_spectrogram(torch.from_numpy(wav_16k.astype(np.float32))[None].to(lv.device))  # [1, M, T]
        return lv.model.vocoder(mel).float().clamp(-1, 1)[0, : len(wav_16k)].cpu().numpy()


def intelligibility(checkpoint: str | Path | None, corpus: str | Path, speakers: list[str] | None = None,
                    num: int = 100, progress=None, copy_synth: bool = False) -> list[WerResult]:
    """WER of the model and of the teacher on the corpus's held-out texts (the last `holdout` of training);
    with copy_synth also of the teacher's audio re-synthesised by our vocoder from its mel."""
    from incasa.voice.data import load_wav_16k, read_manifest
    from incasa.voice.speak import load_voice, synthesize
    from incasa.voice.train import split_holdout

    lv = load_voice(checkpoint)
    corpus = Path(corpus)
    rows = read_manifest(corpus)
    held = split_holdout([r["text"] for r in rows], int(lv.meta["train"]["holdout"]))
    speakers = speakers or list(lv.speakers)
    asr = Recogniser()
    results = []
    for spk in speakers:
        items = [r for r in rows if r["speaker"] == spk and r["text"] in held][:num]
        if not items:
            raise ValueError(f"the corpus has no held-out sentences of speaker {spk!r}")
        task = progress.add_task(f"WER {spk}", total=len(items)) if progress else None
        refs, ours, teacher, vocoded = [], [], [], []
        for r in items:
            audio, _ = synthesize(r["text"], voice=spk, checkpoint=checkpoint)
            refs.append(r["text"])
            ours.append(asr.transcribe(audio))
            teacher_wav = load_wav_16k(corpus / r["wav"])
            teacher.append(asr.transcribe(teacher_wav))
            if copy_synth:
                vocoded.append(asr.transcribe(copy_synthesis(lv, teacher_wav)))
            if progress:
                progress.update(task, advance=1)
        results.append(WerResult(spk, len(items), wer(refs, ours), wer(refs, teacher),
                                 wer(refs, vocoded) if copy_synth else None))
    return results
