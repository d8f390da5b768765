"""The acoustic model: phonemes -> log-mel spectrogram, non-autoregressive (FastSpeech 2 / FastPitch family).

    phones [B, N] --embed + speaker--> encoder (transformer, N phone positions)
        --> duration predictor   log(1 + frames) per phone           (trained on the corpus durations)
        --> pitch predictor      per-phone log f0, z-scored per speaker  -> embedded, added back (FastPitch)
        --> energy predictor     per-phone log-mel energy, z-scored      -> embedded, added back
        --> length regulator     phone i repeated d_i times              [B, T] frames, all at once
        --> decoder (ConvNeXt blocks at frame rate, no attention: cost linear in T) --> mel [B, M, T]

Every frame is produced in one parallel pass, so speed does not depend on a token-by-token loop. The controls act
on the predicted quantities before the length regulator, which is what makes them cheap and reliable:
    speed        divides the predicted durations (length scale = 1 / speed)
    pitch_shift  is added to the predicted z-scored pitch (speak.py converts semitones with the speaker's stats)
    energy_shift is added to the predicted z-scored energy

Training is teacher-forced: the true durations/pitch/energy drive the regulator and the embeddings, while the
predictors learn to estimate them (`acoustic_loss`). There is no dropout, so a run is reproducible bit for bit.

Shape legend: B batch, N phones, T frames, D width, M mel bands (80), S speakers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from incasa.nn.layers import attention
from incasa.voice.vocoder import N_MELS, ConvNeXtBlock, Vocoder, VocoderConfig


@dataclass(frozen=True)
class AcousticConfig:
    num_phones: int = 41
    num_speakers: int = 3
    dim: int = 192
    heads: int = 2
    enc_layers: int = 4
    dec_layers: int = 4


ACOUSTIC_PRESETS = {
    "tiny": dict(dim=32, heads=2, enc_layers=1, dec_layers=1),  # tests
    "small": dict(dim=192, heads=2, enc_layers=4, dec_layers=4),  # the shipped default
    "base": dict(dim=384, heads=4, enc_layers=6, dec_layers=6),  # a GPU run
}


def sinusoids(length: int, dim: int, device) -> torch.Tensor:
    """[length, dim] absolute position features (Vaswani et al.)."""
    pos = torch.arange(length, device=device, dtype=torch.float32)[:, None]
    freqs = torch.exp(-math.log(10000.0) * torch.arange(0, dim, 2, device=device, dtype=torch.float32) / dim)
    return torch.cat([torch.sin(pos * freqs), torch.cos(pos * freqs)], dim=-1)


class EncoderLayer(nn.Module):
    """Pre-norm self-attention + a convolutional feed-forward (kernel 3 sees neighbouring phones), as FastSpeech."""

    def __init__(self, dim: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm1 = nn.LayerNorm(dim)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim)
        self.ff1 = nn.Conv1d(dim, 4 * dim, 3, padding=1)
        self.ff2 = nn.Conv1d(4 * dim, dim, 1)

    def forward(self, x_BND, mask_BN):
        B, N, D = x_BND.shape
        q, k, v = self.qkv(self.norm1(x_BND)).view(B, N, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        x_BND = x_BND + self.proj(attention(q, k, v, mask_BN))  # attention returns [B, N, D]
        h = self.norm2(x_BND) * mask_BN[..., None]  # zero the padding: then kernel 3 sees what an unpadded run sees
        h = self.ff2(F.gelu(self.ff1(h.transpose(1, 2)))).transpose(1, 2)
        return (x_BND + h) * mask_BN[..., None]


class VariancePredictor(nn.Module):
    """Two conv layers (kernel 3) + LayerNorm + ReLU -> one scalar per phone."""

    def __init__(self, dim: int):
        super().__init__()
        self.conv1 = nn.Conv1d(dim, dim, 3, padding=1)
        self.norm1 = nn.LayerNorm(dim)
        self.conv2 = nn.Conv1d(dim, dim, 3, padding=1)
        self.norm2 = nn.LayerNorm(dim)
        self.out = nn.Linear(dim, 1)

    def forward(self, x_BND, mask_BN):
        m = mask_BN[..., None].to(x_BND.dtype)  # padding zeroed before each conv: batching never changes results
        h = F.relu(self.norm1(self.conv1((x_BND * m).transpose(1, 2)).transpose(1, 2)))
        h = F.relu(self.norm2(self.conv2((h * m).transpose(1, 2)).transpose(1, 2)))
        return self.out(h)[..., 0] * mask_BN


def length_regulate(h_BND: torch.Tensor, durations_BN: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Repeat phone i durations[i] times, for the whole batch at once: [B, T, D] and the frame mask [B, T]."""
    ends_BN = torch.cumsum(durations_BN, dim=1)
    T = max(int(ends_BN[:, -1].max()), 1)
    frames_T = torch.arange(T, device=h_BND.device)
    idx_BT = torch.searchsorted(ends_BN, frames_T.expand(len(ends_BN), T).contiguous(), right=True)
    mask_BT = frames_T[None] < ends_BN[:, -1:]
    idx_BT = idx_BT.clamp(max=h_BND.shape[1] - 1)
    return torch.gather(h_BND, 1, idx_BT[..., None].expand(-1, -1, h_BND.shape[-1])), mask_BT


class AcousticModel(nn.Module):
    def __init__(self, cfg: AcousticConfig):
        super().__init__()
        self.cfg = cfg
        D = cfg.dim
        self.phone_embed = nn.Embedding(cfg.num_phones, D, padding_idx=0)
        self.speaker_embed = nn.Embedding(cfg.num_speakers, D)
        self.encoder = nn.ModuleList([EncoderLayer(D, cfg.heads) for _ in range(cfg.enc_layers)])
        self.enc_norm = nn.LayerNorm(D)
        self.duration = VariancePredictor(D)
        self.pitch = VariancePredictor(D)
        self.energy = VariancePredictor(D)
        self.pitch_embed = nn.Conv1d(1, D, 3, padding=1)
        self.energy_embed = nn.Conv1d(1, D, 3, padding=1)
        self.dec_speaker = nn.Embedding(cfg.num_speakers, D)
        self.decoder = nn.ModuleList([ConvNeXtBlock(D) for _ in range(cfg.dec_layers)])
        self.dec_norm = nn.LayerNorm(D)
        self.to_mel = nn.Linear(D, N_MELS)
        nn.init.constant_(self.to_mel.bias, -6.0)  # about the mean log-mel of speech: the first steps need not find it

    def encode(self, phones_BN, speaker_B):
        mask_BN = phones_BN != 0
        x = self.phone_embed(phones_BN) + self.speaker_embed(speaker_B)[:, None]
        x = (x + sinusoids(phones_BN.shape[1], self.cfg.dim, x.device)) * mask_BN[..., None]
        for layer in self.encoder:
            x = layer(x, mask_BN)
        return self.enc_norm(x) * mask_BN[..., None], mask_BN

    def decode(self, h_BND, durations_BN, pitch_BN, energy_BN, speaker_B):
        h_BND = h_BND + self.pitch_embed(pitch_BN[:, None]).transpose(1, 2)
        h_BND = h_BND + self.energy_embed(energy_BN[:, None]).transpose(1, 2)
        x_BTD, mask_BT = length_regulate(h_BND, durations_BN)
        x = (x_BTD + self.dec_speaker(speaker_B)[:, None]).transpose(1, 2)  # [B, D, T]
        m = mask_BT[:, None].to(x.dtype)
        x = x * m
        for block in self.decoder:
            x = block(x) * m
        mel_BTM = self.to_mel(self.dec_norm(x.transpose(1, 2)))
        return mel_BTM.transpose(1, 2), mask_BT  # [B, M, T]

    def forward(self, phones_BN, speaker_B, durations_BN, pitch_BN, energy_BN):
        """Teacher-forced pass for training: (mel, log-duration, pitch, energy predictions, frame mask)."""
        h, mask_BN = self.encode(phones_BN, speaker_B)
        logd, p, e = self.duration(h, mask_BN), self.pitch(h, mask_BN), self.energy(h, mask_BN)
        mel, mask_BT = self.decode(h, durations_BN, pitch_BN, energy_BN, speaker_B)
        return mel, logd, p, e, mask_BT

    @torch.no_grad()
    def infer(self, phones_BN, speaker_B, speed: float = 1.0, pitch_shift: float = 0.0, energy_shift: float = 0.0):
        """Predicted durations / pitch / energy drive the decoder: (mel [B, M, T], frames per utterance [B])."""
        if speed <= 0:
            raise ValueError(f"speed must be positive, got {speed}")
        h, mask_BN = self.encode(phones_BN, speaker_B)
        logd = self.duration(h, mask_BN).float()
        durations = torch.clamp(torch.round(torch.expm1(logd.clamp(min=0)) / speed), min=1).long() * mask_BN
        pitch = (self.pitch(h, mask_BN) + pitch_shift) * mask_BN
        energy = (self.energy(h, mask_BN) + energy_shift) * mask_BN
        mel, mask_BT = self.decode(h, durations, pitch.to(h.dtype), energy.to(h.dtype), speaker_B)
        return mel, mask_BT.sum(dim=1)


def acoustic_loss(model: AcousticModel, batch: dict) -> tuple[torch.Tensor, dict]:
    """Masked mel L1 + MSE on log(1 + duration), pitch and energy. batch keys: phones, speaker, durations, pitch,
    energy [B, N] and mel [B, M, T]."""
    mel, logd, p, e, mask_BT = model(batch["phones"], batch["speaker"], batch["durations"], batch["pitch"],
                                     batch["energy"])
    mask_BN = (batch["phones"] != 0).float()
    n_ph = mask_BN.sum()
    m = mask_BT[:, None].float()
    target = batch["mel"][..., : mel.shape[-1]].float()
    mel_l1 = (torch.abs(mel.float() - target) * m).sum() / (m.sum() * N_MELS)
    dur = (((logd.float() - torch.log1p(batch["durations"].float())) ** 2) * mask_BN).sum() / n_ph
    pitch = (((p.float() - batch["pitch"]) ** 2) * mask_BN).sum() / n_ph
    energy = (((e.float() - batch["energy"]) ** 2) * mask_BN).sum() / n_ph
    loss = mel_l1 + dur + 0.1 * pitch + 0.1 * energy
    return loss, {"mel": mel_l1.item(), "dur": dur.item(), "pitch": pitch.item(), "energy": energy.item()}


class VoiceModel(nn.Module):
    """The acoustic model and the vocoder in one module, so one checkpoint (and one optimiser, one EMA) holds both.
    They are trained side by side but independently: the vocoder learns from true mels, never from predictions."""

    def __init__(self, acoustic: AcousticConfig, vocoder: VocoderConfig):
        super().__init__()
        self.acoustic = AcousticModel(acoustic)
        self.vocoder = Vocoder(vocoder)
