"""Training loop (exact resume, refusals), the speak API (round trip, controls, formats, bad input) and the CLI."""

import json

import numpy as np
import pytest
import soundfile as sf
import torch
from typer.testing import CliRunner

from incasa.cli import app
from incasa.train.checkpoint import read_file
from incasa.voice.speak import load_voice, stream, synthesize, voices, write_audio
from incasa.voice.train import split_holdout, train
from tests.voice.conftest import tiny_cfg

LOSS_KEYS = ("loss", "acoustic", "vocoder", "mel", "dur", "pitch", "energy")


def _losses(run):
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [[r[k] for k in LOSS_KEYS] for r in rows]


def test_exact_resume_matches_uninterrupted_run(tiny_corpus, tmp_path):
    train(tiny_cfg(tiny_corpus, tmp_path / "a", steps=4))
    train(tiny_cfg(tiny_corpus, tmp_path / "b", steps=2))
    train(tiny_cfg(tiny_corpus, tmp_path / "b", steps=4))  # resumes from the step-2 checkpoint
    assert _losses(tmp_path / "a") == _losses(tmp_path / "b")
    wa, meta = read_file(tmp_path / "a" / "model.safetensors")
    wb, _ = read_file(tmp_path / "b" / "model.safetensors")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert meta["step"] == 4 and meta["speakers"] == ["alto", "bass"]
    assert (tmp_path / "a" / "curve.png").stat().st_size > 0


def test_training_refusals(tiny_corpus, tmp_path):
    with pytest.raises(ValueError, match="unknown preset"):
        train(tiny_cfg(tiny_corpus, tmp_path / "x", preset="huge"))
    with pytest.raises(ValueError, match="neither manifest.jsonl nor metadata.csv"):
        train(tiny_cfg(tmp_path / "empty", tmp_path / "y"))
    train(tiny_cfg(tiny_corpus, tmp_path / "r", steps=2))
    with pytest.raises(ValueError, match="another model"):
        train(tiny_cfg(tiny_corpus, tmp_path / "r", steps=4, preset="small"))
    assert split_holdout(["a", "b", "a", "c"], 1) == {"c"}
    with pytest.raises(ValueError, match="nothing to train"):
        split_holdout(["a", "b"], 2)


def test_checkpoint_round_trip_and_determinism(tiny_checkpoint):
    assert voices(tiny_checkpoint) == ["alto", "bass"]
    a, sr = synthesize("Hello there. How are you?", voice="bass", checkpoint=tiny_checkpoint)
    b, _ = synthesize("Hello there. How are you?", voice="bass", checkpoint=tiny_checkpoint)
    assert sr == 16000 and a.dtype == np.float32 and len(a) > 0
    assert np.array_equal(a, b)
    c, _ = synthesize("Hello there. How are you?", voice="alto", checkpoint=tiny_checkpoint)
    assert not np.array_equal(a, c)
    pieces = list(stream("Hello there. How are you?", voice="bass", checkpoint=tiny_checkpoint))
    assert len(pieces) == 2 and abs(sum(map(len, pieces)) - len(a)) <= 2 * 256
    # the training state (EMA weights inside) loads as well as the exported fp16 file
    lv = load_voice(tiny_checkpoint.with_name("train_state.safetensors"))
    assert lv.speakers == ("alto", "bass")


def test_speed_changes_length(tiny_checkpoint):
    text = "Speaking slowly and then quickly."
    normal, _ = synthesize(text, checkpoint=tiny_checkpoint)
    fast, _ = synthesize(text, speed=2.0, checkpoint=tiny_checkpoint)
    slow, _ = synthesize(text, speed=0.5, checkpoint=tiny_checkpoint)
    assert len(slow) > len(normal) > len(fast)
    higher, _ = synthesize(text, pitch=4.0, checkpoint=tiny_checkpoint)
    louder, _ = synthesize(text, energy=1.0, checkpoint=tiny_checkpoint)
    # pitch and energy act after the duration predictor: same length, different sound
    assert len(higher) == len(louder) == len(normal)
    assert not np.array_equal(higher, normal) and not np.array_equal(louder, normal)
    with pytest.raises(ValueError, match="semitones"):
        synthesize(text, pitch=20, checkpoint=tiny_checkpoint)


def test_bad_inputs(tiny_checkpoint, tmp_path):
    with pytest.raises(ValueError, match="nothing to speak"):
        synthesize("  ", checkpoint=tiny_checkpoint)
    with pytest.raises(ValueError, match="unknown voice 'nobody'"):
        synthesize("hi", voice="nobody", checkpoint=tiny_checkpoint)
    with pytest.raises(ValueError, match="speed"):
        synthesize("hi", speed=0, checkpoint=tiny_checkpoint)
    with pytest.raises(ValueError, match="does not exist"):
        synthesize("hi", checkpoint=tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="unsupported audio format"):
        write_audio(tmp_path / "x.aac", np.zeros(100, np.float32), 16000)
    long_text = "This sentence is rather long and it goes on. " * 60  # 60 sentences: split and batched
    audio, sr = synthesize(long_text, checkpoint=tiny_checkpoint)
    assert len(audio) > 60 * 0.3 * sr


@pytest.mark.parametrize("ext", ["wav", "flac", "mp3", "opus"])
def test_write_formats(tmp_path, ext):
    t = np.arange(16000) / 16000
    audio = (0.3 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
    write_audio(tmp_path / f"a.{ext}", audio, 16000)
    back, sr = sf.read(tmp_path / f"a.{ext}")
    assert sr == 16000 and abs(len(back) - 16000) < 1200  # codec padding of MP3/Opus
    assert [p.name for p in tmp_path.iterdir()] == [f"a.{ext}"]  # no temp file left behind


def test_cli(tiny_checkpoint, tmp_path):
    runner = CliRunner()
    out = tmp_path / "s.flac"
    r = runner.invoke(app, ["speak", "Hello world.", "-o", str(out), "--voice", "alto", "--speed", "1.1",
                            "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 0, r.output
    assert sf.info(out).samplerate == 16000
    r = runner.invoke(app, ["voices", "--checkpoint", str(tiny_checkpoint)])
    assert r.exit_code == 0 and r.output.split("\n")[:2] == ["alto  (default)", "bass"]
    for args, message in [(["speak", "hi", "--voice", "nobody"], "unknown voice"),
                          (["speak", "hi", "-o", str(tmp_path / "x.aac")], "unsupported audio format"),
                          (["speak", "   "], "nothing to speak")]:
        r = runner.invoke(app, args + ["--checkpoint", str(tiny_checkpoint)])
        assert r.exit_code == 2 and message in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["train", "voice", "--data", str(tmp_path / "nothing"), "--out", str(tmp_path / "o")])
    assert r.exit_code == 2 and "--build-corpus" in r.output


def test_copy_synthesis_keeps_length_and_is_deterministic(tiny_checkpoint):
    from incasa.voice.eval import copy_synthesis

    lv = load_voice(tiny_checkpoint)
    t = np.arange(16000 // 2) / 16000
    wav = (0.3 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)  # half a second of a 220 Hz tone
    a, b = copy_synthesis(lv, wav), copy_synthesis(lv, wav)
    assert a.shape == wav.shape and a.dtype == np.float32
    assert np.isfinite(a).all() and np.abs(a).max() <= 1.0
    np.testing.assert_array_equal(a, b)


def test_written_audio_gets_the_usual_file_mode(tmp_path):
    import os

    umask = os.umask(0o022)
    os.umask(umask)
    path = tmp_path / "a.wav"
    write_audio(path, np.zeros(1600, np.float32), 16000)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # not mkstemp's 0600
    assert [p.name for p in tmp_path.iterdir()] == ["a.wav"]  # no temp file left behind
