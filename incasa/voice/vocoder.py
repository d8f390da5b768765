"""The vocoder: log-mel spectrogram -> waveform, Vocos-style (a ConvNeXt stack at frame rate + an iSTFT head).

Most neural vocoders upsample frames to samples with transposed convolutions, so all their compute runs at the
sample rate (16,000 per second). Vocos (Siuzdenko 2023) and iSTFTNet instead stay at the frame rate (62.5 frames
per second here, hop 256) and predict, per frame, the complex STFT (a magnitude and a phase for each of the 513
frequency bins); one inverse FFT then produces the samples. That is ~250x fewer network evaluations than a
sample-rate vocoder and why it reaches many times real time on two CPU cores.

Training here uses only reconstruction losses (mel L1 + multi-resolution STFT magnitude), no adversarial
discriminator: much cheaper on a CPU, at the cost of some phase buzz that a GAN stage would remove (see the report).

Shape legend: B batch, C channels, M mel bands (80), T frames, S samples (= T * HOP), F frequency bins (513).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

SAMPLE_RATE, N_FFT, HOP, N_MELS = 16000, 1024, 256, 80


def mel_filters(sr: int = SAMPLE_RATE, n_fft: int = N_FFT, n_mels: int = N_MELS, fmin: float = 0.0,
                fmax: float = 8000.0) -> torch.Tensor:
    """HTK-scale triangular filterbank [M, F], each filter normalised to unit area (Slaney-style)."""
    def hz_to_mel(f):
        return 2595.0 * np.log10(1.0 + f / 700.0)

    def mel_to_hz(m):
        return 700.0 * (10 ** (m / 2595.0) - 1.0)

    freqs = np.linspace(0, sr / 2, n_fft // 2 + 1)
    pts = mel_to_hz(np.linspace(hz_to_mel(fmin), hz_to_mel(fmax), n_mels + 2))
    fb = np.zeros((n_mels, len(freqs)), np.float32)
    for i in range(n_mels):
        lo, mid, hi = pts[i], pts[i + 1], pts[i + 2]
        fb[i] = np.maximum(0, np.minimum((freqs - lo) / (mid - lo), (hi - freqs) / (hi - mid)))
        fb[i] *= 2.0 / (hi - lo)
    return torch.from_numpy(fb)


_FB: dict[str, torch.Tensor] = {}


def mel_spectrogram(wav_BS: torch.Tensor) -> torch.Tensor:
    """[B, S] float waveform in [-1, 1] -> [B, M, T] natural-log mel magnitudes, T = S // HOP + 1."""
    key = str(wav_BS.device)
    if key not in _FB:
        _FB[key] = mel_filters().to(wav_BS.device)
    spec = torch.stft(wav_BS.float(), N_FFT, HOP, window=torch.hann_window(N_FFT, device=wav_BS.device),
                      return_complex=True).abs()
    return torch.log(torch.clamp(_FB[key] @ spec, min=1e-5))


class ConvNeXtBlock(nn.Module):
    """Depthwise conv (k=7) -> LayerNorm -> pointwise MLP (GELU) -> residual; input [B, C, T]."""

    def __init__(self, dim: int, expand: int = 3):
        super().__init__()
        self.dw = nn.Conv1d(dim, dim, 7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim)
        self.pw1 = nn.Linear(dim, dim * expand)
        self.pw2 = nn.Linear(dim * expand, dim)
        self.gamma = nn.Parameter(torch.full((dim,), 0.1))

    def forward(self, x_BCT):
        h = self.norm(self.dw(x_BCT).transpose(1, 2))
        h = self.pw2(F.gelu(self.pw1(h))) * self.gamma
        return x_BCT + h.transpose(1, 2)


@dataclass(frozen=True)
class VocoderConfig:
    dim: int = 192
    num_layers: int = 6


VOCODER_PRESETS = {
    "tiny": VocoderConfig(dim=32, num_layers=1),  # tests
    "small": VocoderConfig(dim=192, num_layers=6),  # the shipped default
    "base": VocoderConfig(dim=384, num_layers=8),  # a GPU run
}


class Vocoder(nn.Module):
    def __init__(self, cfg: VocoderConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Conv1d(N_MELS, cfg.dim, 7, padding=3)
        self.norm = nn.LayerNorm(cfg.dim)
        self.blocks = nn.ModuleList([ConvNeXtBlock(cfg.dim) for _ in range(cfg.num_layers)])
        self.final_norm = nn.LayerNorm(cfg.dim)
        self.head = nn.Linear(cfg.dim, 2 * (N_FFT // 2 + 1))
        self.register_buffer("window", torch.hann_window(N_FFT), persistent=False)

    def spectrum(self, mel_BMT: torch.Tensor) -> torch.Tensor:
        """[B, M, T] log-mel -> [B, F, T] complex STFT."""
        x = self.norm(self.embed(mel_BMT).transpose(1, 2)).transpose(1, 2)
        for block in self.blocks:
            x = block(x)
        h = self.head(self.final_norm(x.transpose(1, 2))).transpose(1, 2).float()  # [B, 2F, T]
        log_mag, phase = h.chunk(2, dim=1)
        mag = torch.exp(torch.clamp(log_mag, max=6.0))  # clamp: an early-training spike must not overflow
        return torch.polar(mag, phase * math.pi)

    def forward(self, mel_BMT: torch.Tensor) -> torch.Tensor:
        """[B, M, T] -> [B, T * HOP] waveform (the centred iSTFT's natural length for T frames)."""
        spec = self.spectrum(mel_BMT)
        T = spec.shape[-1]
        return torch.istft(spec, N_FFT, HOP, window=self.window, length=(T - 1) * HOP + HOP)


def stft_mag(x_BS: torch.Tensor, n_fft: int, hop: int) -> torch.Tensor:
    win = torch.hann_window(n_fft, device=x_BS.device)
    return torch.stft(x_BS, n_fft, hop, window=win, return_complex=True).abs().clamp(min=1e-5)


def vocoder_loss(pred_BS: torch.Tensor, target_BS: torch.Tensor) -> torch.Tensor:
    """Mel L1 (the Vocos/HiFi-GAN reconstruction term) + multi-resolution STFT loss (spectral convergence +
    log-magnitude L1) at three resolutions; the different window sizes constrain phase across frames."""
    pred_BS, target_BS = pred_BS.float(), target_BS.float()
    loss = F.l1_loss(mel_spectrogram(pred_BS), mel_spectrogram(target_BS))
    for n_fft, hop in ((512, 128), (1024, 256), (2048, 512)):
        p, t = stft_mag(pred_BS, n_fft, hop), stft_mag(target_BS, n_fft, hop)
        sc = torch.linalg.norm(t - p) / torch.linalg.norm(t)
        loss = loss + (sc + F.l1_loss(torch.log(p), torch.log(t))) / 3
    return loss
