"""`incasa speak`, `incasa voices`, `incasa train voice`: thin commands over incasa.voice.speak and .train.

Heavy imports (torch, numpy, gruut, soundfile) happen inside the commands so `incasa --help` stays fast. Expected
errors (bad text, unknown voice, unsupported format, missing checkpoint or corpus) end with one line and exit 2.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import typer


def _fail(message: str) -> None:
    typer.secho(f"Error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(2)


def speak(
    text: str = typer.Argument(..., help="The text to speak; '-' reads it from standard input."),
    out: Path = typer.Option(Path("speech.wav"), "--out", "-o",
                             help="Output file: .wav, .flac, .mp3, .opus or .ogg (Opus)."),
    voice: Optional[str] = typer.Option(None, "--voice", "-v", help="Speaker name (see `incasa voices`)."),
    speed: float = typer.Option(1.0, "--speed", help="Speaking rate: 1.1 is 10% faster (0.25-4)."),
    pitch: float = typer.Option(0.0, "--pitch", help="Pitch shift in semitones (-12..12)."),
    energy: float = typer.Option(0.0, "--energy", help="Loudness/emphasis shift in standard deviations (-3..3)."),
    lang: str = typer.Option("en", "--lang", help="Text language for normalisation and G2P: en or it."),
    lexicon: Optional[Path] = typer.Option(None, "--lexicon",
                                           help="Pronunciation lexicon: lines of 'word ph ph ph' (ARPAbet)."),
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A voice model.safetensors (default: shipped)."),
) -> None:
    """Speak TEXT into an audio file. Inline overrides: {word|ph ph ph} pronounces word with those ARPAbet phones."""
    if text == "-":
        text = sys.stdin.read()
    try:
        from incasa.voice.frontend import load_lexicon
        from incasa.voice.speak import audio_format, synthesize, write_audio

        audio_format(out)  # before any work: an unsupported extension fails at once
        lex = load_lexicon(lexicon) if lexicon else None
        audio, sr = synthesize(text, voice=voice, speed=speed, pitch=pitch, energy=energy, lang=lang,
                               checkpoint=checkpoint, lexicon=lex)
        write_audio(out, audio, sr)
    except (ValueError, OSError) as e:
        _fail(str(e))
    typer.echo(f"wrote {out} ({len(audio) / sr:.2f} s at {sr} Hz)")


def voices(
    checkpoint: Optional[Path] = typer.Option(None, "--checkpoint", help="A voice model.safetensors (default: shipped)."),
) -> None:
    """List the voices (speakers) of a voice model; the first is the default."""
    try:
        from incasa.voice.speak import load_voice

        lv = load_voice(checkpoint)
    except (ValueError, OSError) as e:
        _fail(str(e))
    for i, name in enumerate(lv.speakers):
        typer.echo(f"{name}{'  (default)' if i == 0 else ''}")


def train_voice(
    data: Path = typer.Option(..., "--data", help="Corpus folder (manifest.jsonl), an LJSpeech-layout folder "
                                                  "(metadata.csv + wavs/), or where to build the festival corpus."),
    out: Path = typer.Option(..., "--out", help="Run folder (resumes from its train_state.safetensors)."),
    preset: str = typer.Option("small", "--preset", help="Model size: tiny, small (the default voice) or base."),
    build_corpus: bool = typer.Option(False, "--build-corpus",
                                      help="Synthesise the festival distillation corpus into --data if missing."),
    max_sentences: int = typer.Option(0, "--max-sentences", help="With --build-corpus: only the first N sentences."),
    holdout: int = typer.Option(100, "--holdout", help="Texts kept out of training for evaluation."),
    steps: int = typer.Option(3000, "--steps"),
    batch_size: int = typer.Option(16, "--batch-size", help="Utterances per acoustic-model batch."),
    voc_batch: int = typer.Option(8, "--voc-batch", help="Segments per vocoder batch."),
    voc_frames: int = typer.Option(32, "--voc-frames", help="Mel frames per vocoder segment."),
    lr: float = typer.Option(1e-3, "--lr"),
    warmup: int = typer.Option(200, "--warmup"),
    grad_clip: float = typer.Option(1.0, "--grad-clip"),
    ema_decay: float = typer.Option(0.999, "--ema-decay"),
    log_every: int = typer.Option(10, "--log-every"),
    ckpt_every: int = typer.Option(250, "--ckpt-every"),
    seed: int = typer.Option(0, "--seed"),
    device: str = typer.Option("auto", "--device", help="auto (CUDA with bf16 when present), cpu or cuda."),
) -> None:
    """Train a text-to-speech model (acoustic model + vocoder) from scratch; exports model.safetensors + curve.png."""
    from incasa.voice.train import TrainConfig, train

    cfg = TrainConfig(data=str(data), out=str(out), preset=preset, build_corpus=build_corpus,
                      max_sentences=max_sentences, holdout=holdout, steps=steps, batch_size=batch_size,
                      voc_batch=voc_batch, voc_frames=voc_frames, lr=lr, warmup=warmup, grad_clip=grad_clip,
                      ema_decay=ema_decay, log_every=log_every, ckpt_every=ckpt_every, seed=seed, device=device)
    try:
        result = train(cfg)
    except (ValueError, RuntimeError, OSError) as e:
        _fail(str(e))
    typer.echo(f"trained {result['step']} steps -> {Path(result['out']) / 'model.safetensors'}")
