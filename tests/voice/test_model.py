"""Acoustic model and vocoder at toy width: shapes, length regulation, speed control, determinism, learning."""

import numpy as np
import pytest
import torch

from incasa.voice.data import HOP, PHONE_ID, SAMPLE_RATE, fold_phone, num_mel_frames, pitch_autocorr, times_to_frames
from incasa.voice.model import ACOUSTIC_PRESETS, AcousticConfig, AcousticModel, acoustic_loss, length_regulate
from incasa.voice.vocoder import VOCODER_PRESETS, Vocoder, mel_spectrogram, vocoder_loss


def tiny_model(seed=0):
    torch.manual_seed(seed)
    return AcousticModel(AcousticConfig(num_phones=len(PHONE_ID), num_speakers=2, **ACOUSTIC_PRESETS["tiny"])).eval()


def test_length_regulate_repeats_each_phone_its_duration():
    h = torch.arange(3.0)[None, :, None].expand(2, 3, 1)  # phone i carries value i
    d = torch.tensor([[2, 0, 3], [1, 1, 0]])
    x, mask = length_regulate(h, d)
    assert x.shape == (2, 5, 1)
    assert x[0, :, 0].tolist() == [0, 0, 2, 2, 2]
    assert x[1, :2, 0].tolist() == [0, 1] and mask[1].tolist() == [True, True, False, False, False]


def test_speed_scales_length_and_output_is_deterministic():
    m = tiny_model()
    with torch.no_grad():  # make every phone last ~8 frames so rounding does not hide the scaling
        m.duration.out.weight.zero_()
        m.duration.out.bias.fill_(float(np.log1p(8.0)))
    phones = torch.tensor([[1, 5, 9, 12, 20, 1]])
    spk = torch.tensor([0])
    mel1, n1 = m.infer(phones, spk, speed=1.0)
    mel2, n2 = m.infer(phones, spk, speed=2.0)
    mel_slow, n_slow = m.infer(phones, spk, speed=0.5)
    assert int(n1) == 48 and int(n2) == 24 and int(n_slow) == 96
    assert mel1.shape == (1, 80, 48)
    again, _ = m.infer(phones, spk, speed=1.0)
    assert torch.equal(mel1, again)
    other_voice, _ = m.infer(phones, torch.tensor([1]), speed=1.0)
    assert not torch.equal(mel1, other_voice)
    with pytest.raises(ValueError, match="speed"):
        m.infer(phones, spk, speed=0.0)


def test_padding_does_not_change_an_utterance():
    m = tiny_model()
    a = torch.tensor([[1, 5, 9, 1]])
    padded = torch.tensor([[1, 5, 9, 1, 0, 0], [1, 7, 7, 7, 7, 1]])
    mel_a, n_a = m.infer(a, torch.tensor([0]))
    mel_b, n_b = m.infer(padded, torch.tensor([0, 0]))
    assert int(n_a) == int(n_b[0])
    assert torch.allclose(mel_a[0], mel_b[0, :, : int(n_a)], atol=1e-5)


def test_acoustic_loss_goes_down():
    m = tiny_model().train()
    g = torch.Generator().manual_seed(0)
    batch = {"phones": torch.randint(1, len(PHONE_ID), (2, 6), generator=g),
             "speaker": torch.tensor([0, 1]), "durations": torch.randint(1, 4, (2, 6), generator=g),
             "pitch": torch.randn(2, 6, generator=g), "energy": torch.randn(2, 6, generator=g)}
    T = int(batch["durations"].sum(1).max())
    batch["mel"] = torch.randn(2, 80, T, generator=g) - 5
    opt = torch.optim.AdamW(m.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, parts = acoustic_loss(m, batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.6 * losses[0]
    assert set(parts) == {"mel", "dur", "pitch", "energy"}


def test_vocoder_shapes_and_loss():
    torch.manual_seed(0)
    voc = Vocoder(VOCODER_PRESETS["tiny"])
    wav = torch.randn(2, 16 * HOP) * 0.1
    mel = mel_spectrogram(wav)
    assert mel.shape == (2, 80, 17) == (2, 80, num_mel_frames(16 * HOP))
    out = voc(mel[..., :16])
    assert out.shape == (2, 16 * HOP)
    assert vocoder_loss(out, wav).item() > vocoder_loss(wav, wav).item()
    assert vocoder_loss(wav, wav).item() < 1e-4


def test_durations_from_times_and_phone_folding():
    d = times_to_frames([0.1, 0.25, 0.31], num_frames=20)
    assert sum(d) == 20 and d[0] == 6 and all(x >= 0 for x in d)
    assert fold_phone("AX") == "ah" and fold_phone("SIL") == "pau" and fold_phone("ey1") == "ey"
    with pytest.raises(ValueError, match="alphabet"):
        fold_phone("qq")


def test_pitch_tracker_finds_a_sine():
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    f0 = pitch_autocorr((0.5 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    voiced = f0[5:-5]
    assert np.all(np.abs(voiced - 200) < 5)
    assert np.all(pitch_autocorr(np.zeros(SAMPLE_RATE, np.float32)) == 0)
