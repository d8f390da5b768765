"""The festival distillation corpus (slow: needs Debian's festival + festvox voices), the LJSpeech import and the
Opus-packed copy of a corpus."""

import os
import shutil

import numpy as np
import pytest

from incasa.voice.data import (PHONE_ID, build_festival_corpus, build_ljspeech_corpus, festival_voices_available,
                               load_features, read_manifest)


def _need_festival():
    if shutil.which("festival") is None or not festival_voices_available():
        if os.environ.get("CI") == "true":
            pytest.fail("festival is required in CI: apt-get install festival festvox-us-slt-hts festvox-kallpc16k")
        pytest.skip("festival or its voices are not installed (apt-get install festival festvox-us-slt-hts)")


@pytest.mark.slow
def test_festival_corpus_has_consistent_timings(tmp_path):
    _need_festival()
    speakers = list(festival_voices_available())[:2]
    rows = build_festival_corpus(tmp_path, ["Hello world, this is a test.", 'A "quoted" word.'], speakers)
    assert len(rows) == 2 * len(speakers)
    assert read_manifest(tmp_path) == rows
    for r in rows:
        assert r["phones"][0] == "pau" and all(p in PHONE_ID for p in r["phones"])
        assert len(r["durations"]) == len(r["phones"])
    feats = load_features(tmp_path)
    assert all(len(m) == d.sum() for m, d in zip(feats.mels, feats.durations))
    assert set(feats.pitch_stats) == set(speakers)


def test_ljspeech_folder_is_refused_without_metadata(tmp_path):
    with pytest.raises(ValueError, match="LJSpeech-layout"):
        build_ljspeech_corpus(tmp_path, tmp_path / "out")


@pytest.mark.slow
def test_ljspeech_import_aligns_with_pocketsphinx(tmp_path):
    _need_festival()
    spk = list(festival_voices_available())[0]
    src = tmp_path / "festival"
    (row,) = build_festival_corpus(src, ["The quick brown fox jumps over the lazy dog."], [spk])
    lj = tmp_path / "lj"
    (lj / "wavs").mkdir(parents=True)
    shutil.copy(src / row["wav"], lj / "wavs" / "LJ001-0001.wav")
    (lj / "metadata.csv").write_text(f"LJ001-0001|{row['text']}|{row['text']}\n")
    (imported,) = build_ljspeech_corpus(lj, tmp_path / "out")
    assert sum(imported["durations"]) == sum(row["durations"])  # same audio, same number of frames
    core = [p for p in imported["phones"] if p != "pau"]
    assert core[:3] == ["dh", "ah", "k"]  # "the qu..."


def test_packed_opus_corpus_loads_like_the_original(tiny_corpus, tmp_path):
    from incasa.voice.data import pack_corpus

    size = pack_corpus(tiny_corpus, tmp_path / "packed")
    assert 0 < size < sum(p.stat().st_size for p in (tiny_corpus / "wavs").iterdir())
    a, b = load_features(tiny_corpus), load_features(tmp_path / "packed")
    assert [len(m) for m in a.mels] == [len(m) for m in b.mels]  # the durations still fit the audio
    assert all(np.array_equal(x, y) for x, y in zip(a.durations, b.durations))
    # lossy audio: mels close on average, not equal
    assert np.mean([np.abs(x.astype(float) - y.astype(float)).mean() for x, y in zip(a.mels, b.mels)]) < 1.5
