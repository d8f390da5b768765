"""Speech training data: a distillation corpus synthesised by Debian's festival voices, or an LJSpeech-layout folder.

No speech corpus can be downloaded here, so the shipped default learns from a corpus that *other open voices
speak*: festival (Debian package `festival`) reads the sentence set `sentences_en.txt` (plain sentences harvested
from the docstrings of CPython's standard library, PSF licence) with each installed English festvox voice
(cmu_us_slt_arctic_hts, kal_diphone, ked_diphone). That makes it a distillation corpus: the model can at best
sound like its teachers, and it inherits their prosody and their mistakes.

The corpus folder is our own small layout, written atomically, one utterance per line of `manifest.jsonl`:
    {"id": "slt_0001", "speaker": "slt", "text": "...", "wav": "wavs/slt_0001.wav",
     "phones": ["pau", "hh", "ah", ...], "durations": [12, 4, 3, ...]}   durations in mel frames
Phone labels are ARPAbet without stress (pau for silence); schwa `ax` is folded into `ah`, which is what
pocketsphinx's dictionary uses, so the two sources below share one symbol set with the text front end.

Where the durations come from (no aligner has to be trained):
  festival   its Segment relation holds the exact end time of every phone it synthesised;
  LJSpeech   `metadata.csv` (id|text|normalised text) + `wavs/` is force-aligned phone by phone with pocketsphinx
             (its PyPI wheel carries an English acoustic model and dictionary).

`load_features` turns a corpus into tensors for training: log-mel spectrograms (16 kHz, hop 256, 80 bands), and
per-phone log pitch (autocorrelation estimate, z-scored per speaker) and log energy, the FastPitch recipe.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

SAMPLE_RATE = 16000
HOP = 256
N_FFT = 1024
N_MELS = 80

# ARPAbet (CMU, no stress) + pau: the model's input alphabet. Index 0 is padding.
PHONES = ["<pad>", "pau", "aa", "ae", "ah", "ao", "aw", "ay", "b", "ch", "d", "dh", "eh", "er", "ey", "f", "g", "hh",
          "ih", "iy", "jh", "k", "l", "m", "n", "ng", "ow", "oy", "p", "r", "s", "sh", "t", "th", "uh", "uw", "v", "w",
          "y", "z", "zh"]
PHONE_ID = {p: i for i, p in enumerate(PHONES)}
_FOLD = {"ax": "ah", "sil": "pau", "h#": "pau", "brth": "pau", "#": "pau"}

FESTIVAL_VOICES = {  # speaker name -> festival voice; Debian packages festvox-us-slt-hts, festvox-kallpc16k, -kdlpc16k
    "slt": "cmu_us_slt_arctic_hts",
    "kal": "kal_diphone",
    "ked": "ked_diphone",
}


def fold_phone(p: str) -> str:
    p = re.sub(r"\d", "", p.lower())
    p = _FOLD.get(p, p)
    if p not in PHONE_ID:
        raise ValueError(f"phone {p!r} is not in the model's alphabet")
    return p


def times_to_frames(ends_s: list[float], num_frames: int) -> list[int]:
    """Phone end times (seconds) -> integer frame counts that sum to num_frames (rounding the cumulative sums, so
    rounding errors never accumulate)."""
    edges = np.rint(np.asarray(ends_s) * SAMPLE_RATE / HOP).astype(int)
    edges = np.clip(np.maximum.accumulate(edges), 0, num_frames)
    edges[-1] = num_frames
    return np.diff(np.concatenate([[0], edges])).tolist()


def num_mel_frames(num_samples: int) -> int:
    return num_samples // HOP + 1  # centred STFT


def load_wav_16k(path: str | Path) -> np.ndarray:
    import soundfile as sf
    from scipy.signal import resample_poly

    wav, sr = sf.read(str(path), dtype="float32", always_2d=True)
    wav = wav.mean(axis=1)
    if sr != SAMPLE_RATE:
        g = np.gcd(sr, SAMPLE_RATE)
        wav = resample_poly(wav, SAMPLE_RATE // g, sr // g).astype(np.float32)
    return wav


def _write_wav(path: Path, wav: np.ndarray) -> None:
    import soundfile as sf

    tmp = path.with_suffix(".tmp.wav")
    sf.write(str(tmp), np.clip(wav, -1, 1), SAMPLE_RATE, subtype="PCM_16")
    os.replace(tmp, path)


def _write_manifest(out: Path, rows: list[dict]) -> None:
    tmp = out / "manifest.jsonl.tmp"
    tmp.write_text("".join(json.dumps(r) + "\n" for r in rows))
    os.replace(tmp, out / "manifest.jsonl")


def read_manifest(corpus: str | Path) -> list[dict]:
    path = Path(corpus) / "manifest.jsonl"
    if not path.is_file():
        raise ValueError(f"{corpus} is not a voice corpus (no manifest.jsonl); build one with `incasa train voice "
                         "--build-corpus` or point --data at an LJSpeech-layout folder")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------- festival distillation corpus

_SCHEME = """
({voice})
(define (incasa_say id text path)
  (let ((utt (eval (list 'Utterance 'Text text))))
    (utt.synth utt)
    (utt.save.wave utt path 'riff)
    (format t "UTT %s" id)
    (mapcar (lambda (s) (format t " %s:%f" (item.name s) (item.feat s "end"))) (utt.relation.items utt 'Segment))
    (format t "\\n")))
"""


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", " ").replace('"', "'") + '"'


def festival_voices_available() -> dict[str, str]:
    """Speakers whose festival voice is installed (festival must be on PATH)."""
    if shutil.which("festival") is None:
        return {}
    roots = [Path("/usr/share/festival/voices"), Path("/usr/lib/festival/voices")]
    installed = {p.name for r in roots if r.is_dir() for p in r.glob("*/*")}
    return {spk: v for spk, v in FESTIVAL_VOICES.items() if v in installed}


def synthesize_festival(voice: str, items: list[tuple[str, str]], wav_dir: Path) -> dict[str, list[tuple[str, float]]]:
    """Speak (id, text) pairs with one festival process; returns id -> [(phone, end_s)] and writes raw wavs."""
    if shutil.which("festival") is None:
        raise RuntimeError("festival is not installed (apt-get install festival festvox-us-slt-hts festvox-kallpc16k)")
    lines = [_SCHEME.format(voice=f"voice_{voice}")]
    for uid, text in items:
        lines.append(f"(incasa_say \"{uid}\" {_scheme_string(text)} \"{wav_dir / (uid + '.raw.wav')}\")")
    with tempfile.NamedTemporaryFile("w", suffix=".scm", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        script = f.name
    try:
        res = subprocess.run(["festival", "-b", script], capture_output=True, text=True, check=False)
    finally:
        os.unlink(script)
    segs: dict[str, list[tuple[str, float]]] = {}
    for line in res.stdout.splitlines():
        if line.startswith("UTT "):
            uid, *pairs = line[4:].split()
            segs[uid] = [(p.rsplit(":", 1)[0], float(p.rsplit(":", 1)[1])) for p in pairs]
    if not segs:
        raise RuntimeError(f"festival produced nothing for voice {voice}: {res.stderr[-500:]}")
    return segs


def build_festival_corpus(out: str | Path, sentences: list[str], speakers: list[str] | None = None,
                          chunk: int = 100, progress=None) -> list[dict]:
    """Synthesise every sentence with every speaker, resample to 16 kHz, keep festival's phone timings."""
    out = Path(out)
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    available = festival_voices_available()
    speakers = speakers or list(available)
    missing = [s for s in speakers if s not in available]
    if missing or not speakers:
        raise ValueError(f"festival voices not installed for {missing or 'any speaker'}; installed: {sorted(available)}")
    rows: list[dict] = []
    task = progress.add_task("festival", total=len(speakers) * len(sentences)) if progress else None
    for spk in speakers:
        for start in range(0, len(sentences), chunk):
            items = [(f"{spk}_{i:04d}", sentences[i]) for i in range(start, min(start + chunk, len(sentences)))]
            segs = synthesize_festival(available[spk], items, out / "wavs")
            for uid, text in items:
                raw = out / "wavs" / f"{uid}.raw.wav"
                if uid not in segs or not raw.exists():
                    continue  # festival skipped it (rare: text it could not parse); the manifest simply omits it
                wav = load_wav_16k(raw)
                raw.unlink()
                peak = float(np.abs(wav).max()) or 1.0
                wav = wav * (0.9 / peak)  # the teachers' levels differ a lot; one loudness for all speakers
                _write_wav(out / "wavs" / f"{uid}.wav", wav)
                frames = num_mel_frames(len(wav))
                phones = [fold_phone(p) for p, _ in segs[uid]]
                durs = times_to_frames([e for _, e in segs[uid]], frames)
                rows.append({"id": uid, "speaker": spk, "text": text, "wav": f"wavs/{uid}.wav",
                             "phones": phones, "durations": durs})
            if progress:
                progress.update(task, advance=len(items))
            _write_manifest(out, rows)
    return rows


# ---------------------------------------------------------------- LJSpeech-layout folders

def pocketsphinx_align(wav_16k: np.ndarray, text: str) -> list[tuple[str, float]]:
    """Forced alignment of `text` to audio: [(phone, end_s)] with ARPAbet phones (SIL -> pau)."""
    from pocketsphinx import Decoder

    words = re.sub(r"[^a-z' ]", " ", text.lower()).split()
    dec = Decoder(lm=None, loglevel="FATAL")
    oov = [w for w in words if dec.lookup_word(w) is None]
    if oov:
        raise ValueError(f"words not in the pocketsphinx dictionary: {oov[:5]}")
    dec.set_align_text(" ".join(words))
    pcm = (np.clip(wav_16k, -1, 1) * 32767).astype(np.int16).tobytes()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    dec.set_alignment()
    dec.start_utt()
    dec.process_raw(pcm, full_utt=True)
    dec.end_utt()
    out = []
    for word in dec.get_alignment():
        for ph in word:
            out.append((ph.name, (ph.start + ph.duration) / 100.0))  # pocketsphinx frames are 10 ms
    if not out:
        raise ValueError("alignment failed")
    return out


def build_ljspeech_corpus(src: str | Path, out: str | Path, speaker: str = "user", progress=None) -> list[dict]:
    """Import metadata.csv + wavs/ (LJSpeech layout): resample, force-align, write our manifest. Lines that cannot
    be aligned (digits not spelled out, words missing from the dictionary) are skipped and counted."""
    src, out = Path(src), Path(out)
    meta = src / "metadata.csv"
    if not meta.is_file() or not (src / "wavs").is_dir():
        raise ValueError(f"{src} is not an LJSpeech-layout folder (needs metadata.csv and wavs/)")
    (out / "wavs").mkdir(parents=True, exist_ok=True)
    lines = [ln.split("|") for ln in meta.read_text(encoding="utf-8").splitlines() if ln.strip()]
    rows, skipped = [], 0
    task = progress.add_task("align", total=len(lines)) if progress else None
    for parts in lines:
        uid, text = parts[0], parts[-1]
        try:
            wav = load_wav_16k(src / "wavs" / f"{uid}.wav")
            segs = pocketsphinx_align(wav, text)
            phones = [fold_phone(p) for p, _ in segs]
        except (ValueError, RuntimeError, OSError):
            skipped += 1
            continue
        finally:
            if progress:
                progress.update(task, advance=1)
        _write_wav(out / "wavs" / f"{uid}.wav", wav)
        durs = times_to_frames([e for _, e in segs], num_mel_frames(len(wav)))
        rows.append({"id": uid, "speaker": speaker, "text": text, "wav": f"wavs/{uid}.wav",
                     "phones": phones, "durations": durs})
    if not rows:
        raise ValueError(f"no line of {meta} could be aligned ({skipped} skipped)")
    _write_manifest(out, rows)
    return rows


def pack_corpus(src: str | Path, dst: str | Path, fmt: str = "opus") -> int:
    """Copy a corpus with its audio re-encoded (Ogg Opus by default, ~12x smaller than 16-bit WAV) so it can travel
    to a training machine without festival. Returns the bytes written. Opus is lossy: fine for the acoustic model,
    a slight handicap for the vocoder, which then learns from coded audio."""
    import soundfile as sf

    src, dst = Path(src), Path(dst)
    rows = read_manifest(src)
    (dst / "wavs").mkdir(parents=True, exist_ok=True)
    fmt_args = {"opus": ("OGG", "OPUS", ".opus"), "flac": ("FLAC", "PCM_16", ".flac")}[fmt]
    total = 0
    for r in rows:
        wav = load_wav_16k(src / r["wav"])
        rel = f"wavs/{r['id']}{fmt_args[2]}"
        extra = {"compression_level": 0.95} if fmt == "opus" else {}  # ~20 kbit/s: still clean wideband speech
        sf.write(str(dst / rel), wav, SAMPLE_RATE, format=fmt_args[0], subtype=fmt_args[1], **extra)
        total += (dst / rel).stat().st_size
        r["wav"] = rel
    _write_manifest(dst, rows)
    return total


# ---------------------------------------------------------------- features for training

def pitch_autocorr(wav: np.ndarray, fmin: float = 60.0, fmax: float = 400.0, threshold: float = 0.45) -> np.ndarray:
    """Frame-wise f0 (Hz, 0 = unvoiced) by normalised autocorrelation over 1024-sample windows, one per mel frame.
    Good enough for clean synthetic speech; a real-speech corpus would deserve a better tracker (e.g. pYIN)."""
    pad = np.pad(wav, (N_FFT // 2, N_FFT // 2))
    frames = np.lib.stride_tricks.sliding_window_view(pad, N_FFT)[::HOP][: num_mel_frames(len(wav))]
    frames = frames - frames.mean(axis=1, keepdims=True)
    spec = np.fft.rfft(frames * np.hanning(N_FFT), n=2 * N_FFT, axis=1)
    ac = np.fft.irfft(np.abs(spec) ** 2, axis=1)[:, :N_FFT]
    ac = ac / np.maximum(ac[:, :1], 1e-8)
    lo, hi = int(SAMPLE_RATE / fmax), int(SAMPLE_RATE / fmin)
    lag = lo + np.argmax(ac[:, lo:hi], axis=1)
    peak = ac[np.arange(len(lag)), lag]
    f0 = SAMPLE_RATE / lag
    energy = np.sqrt((frames ** 2).mean(axis=1))
    return np.where((peak > threshold) & (energy > 0.01), f0, 0.0).astype(np.float32)


def phone_average(values: np.ndarray, durations: list[int], voiced_only: bool) -> np.ndarray:
    out = np.zeros(len(durations), np.float32)
    start = 0
    for i, d in enumerate(durations):
        seg = values[start:start + d]
        if voiced_only:
            seg = seg[seg > 0]
        out[i] = seg.mean() if len(seg) else 0.0
        start += d
    return out


@dataclass
class Features:
    ids: list[str]
    speakers: list[str]  # speaker name of each utterance
    speaker_names: list[str]  # index -> name
    phones: list[np.ndarray]  # int64 [N]
    durations: list[np.ndarray]  # int64 [N]
    pitch: list[np.ndarray]  # float32 [N] per-phone log f0, z-scored per speaker (0 = unvoiced / mean)
    energy: list[np.ndarray]  # float32 [N] per-phone mean log-mel energy, z-scored over the corpus
    mels: list[np.ndarray]  # float16 [T, 80]
    wavs: list[np.ndarray]  # int16 [T * HOP] (for the vocoder; int16 halves the memory of a corpus)
    pitch_stats: dict[str, tuple[float, float]]  # speaker -> (mean, std) of log f0, to turn semitones into z


def _utterance_features(path: str, durations: list[int], uid: str):
    """One utterance's (mel [T, 80] fp16, per-phone f0 [N], wav int16 [T * HOP]); a process-pool worker."""
    import torch

    from incasa.voice.vocoder import mel_spectrogram

    torch.set_num_threads(1)
    wav = load_wav_16k(path)
    T = int(sum(durations))
    # a lossy copy of the corpus (pack_corpus) may differ by a few samples; more than a frame is a real mismatch
    if abs(num_mel_frames(len(wav)) - T) > 1:
        raise ValueError(f"{uid}: durations sum to {T} frames but the audio has {num_mel_frames(len(wav))}")
    wav = np.pad(wav, (0, max(0, T * HOP - len(wav))))[: T * HOP]
    with torch.no_grad():
        mel = mel_spectrogram(torch.from_numpy(wav)[None])[0, :, :T].T.numpy()  # [T, 80]
    f0 = phone_average(pitch_autocorr(wav), durations, voiced_only=True)
    return mel.astype(np.float16), f0, (np.clip(wav, -1, 1) * 32767).astype(np.int16)


def load_features(corpus: str | Path, progress=None, workers: int | None = None) -> Features:
    """Read the corpus and compute mels / pitch / energy (in worker processes for a big corpus)."""
    from concurrent.futures import ProcessPoolExecutor

    corpus = Path(corpus)
    rows = read_manifest(corpus)
    speaker_names = sorted({r["speaker"] for r in rows})
    args = [(str(corpus / r["wav"]), r["durations"], r["id"]) for r in rows]
    workers = workers if workers is not None else (min(8, os.cpu_count() or 1) if len(rows) > 200 else 1)
    task = progress.add_task("features", total=len(rows)) if progress else None
    results = []
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            for res in pool.map(_utterance_features, *zip(*args), chunksize=16):
                results.append(res)
                if progress:
                    progress.update(task, advance=1)
    else:
        for a in args:
            results.append(_utterance_features(*a))
            if progress:
                progress.update(task, advance=1)
    mels = [m for m, _, _ in results]
    f0s = [f for _, f, _ in results]
    wavs = [w for _, _, w in results]
    phones = [np.asarray([PHONE_ID[p] for p in r["phones"]], np.int64) for r in rows]
    durs = [np.asarray(r["durations"], np.int64) for r in rows]
    energy = [phone_average(m.astype(np.float32).mean(axis=1), r["durations"], voiced_only=False)
              for m, r in zip(mels, rows)]
    e_all = np.concatenate(energy)
    energy = [((e - e_all.mean()) / (e_all.std() + 1e-5)).astype(np.float32) for e in energy]
    pitch = []
    logs = {s: np.concatenate([np.log(f[f > 0]) for f, r in zip(f0s, rows) if r["speaker"] == s]) for s in speaker_names}
    stats = {s: (float(v.mean()), float(v.std() + 1e-5)) for s, v in logs.items()}
    for f, r in zip(f0s, rows):
        m, sd = stats[r["speaker"]]
        pitch.append(np.where(f > 0, (np.log(np.maximum(f, 1e-5)) - m) / sd, 0.0).astype(np.float32))
    return Features([r["id"] for r in rows], [r["speaker"] for r in rows], speaker_names, phones, durs, pitch,
                    energy, mels, wavs, stats)
