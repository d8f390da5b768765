"""Voice fixtures: a tiny synthetic two-speaker corpus (tones, not speech: no festival needed) and a tiny
checkpoint trained on it for a few steps (seconds on CPU), shared by the whole test session."""

import json

import numpy as np
import pytest

from incasa.voice.data import HOP, PHONES, SAMPLE_RATE


def make_corpus(root, num_utts: int = 12, seed: int = 0):
    """Utterances of 5-9 phones; each phone is a tone whose pitch depends on the phone and the speaker."""
    import soundfile as sf

    rng = np.random.default_rng(seed)
    (root / "wavs").mkdir(parents=True)
    rows = []
    for i in range(num_utts):
        spk = "alto" if i % 2 else "bass"
        phones = ["pau"] + [PHONES[j] for j in rng.integers(2, len(PHONES), rng.integers(3, 8))] + ["pau"]
        durs = rng.integers(2, 7, len(phones)).tolist()
        T = sum(durs)
        t = np.arange((T - 1) * HOP) / SAMPLE_RATE
        wav = np.zeros_like(t)
        start = 0
        for p, d in zip(phones, durs):
            seg = slice(start * HOP, min((start + d) * HOP, len(t)))
            if p != "pau":
                f0 = (110 if spk == "bass" else 220) * (1 + PHONES.index(p) / 40)
                wav[seg] = 0.3 * np.sin(2 * np.pi * f0 * t[seg])
            start += d
        sf.write(root / "wavs" / f"u{i}.wav", wav.astype(np.float32), SAMPLE_RATE)
        rows.append({"id": f"u{i}", "speaker": spk, "text": f"sentence {i}", "wav": f"wavs/u{i}.wav",
                     "phones": phones, "durations": durs})
    (root / "manifest.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    return root


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    return make_corpus(tmp_path_factory.mktemp("voice-corpus"))


def tiny_cfg(data, out, **kw):
    from incasa.voice.train import TrainConfig

    base = dict(data=str(data), out=str(out), preset="tiny", holdout=2, steps=4, batch_size=4, voc_batch=2,
                voc_frames=8, lr=3e-3, warmup=1, log_every=1, ckpt_every=2, device="cpu")
    return TrainConfig(**{**base, **kw})


@pytest.fixture(scope="session")
def tiny_checkpoint(tiny_corpus, tmp_path_factory):
    from incasa.voice.train import train

    out = tmp_path_factory.mktemp("voice-run")
    train(tiny_cfg(tiny_corpus, out, steps=3))
    return out / "model.safetensors"
