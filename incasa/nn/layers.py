"""Stable building blocks for the transformers in incasa. Imports only torch.

Shape legend: B batch, L sequence (tokens), D model width, H heads, K head dim (D = H*K), N image tokens.

- `rope_2d`: rotary position embedding over a 2-D grid of image tokens. Half of each head's channels rotate with the
  row index, half with the column index, so attention scores depend on relative (dy, dx) offsets.
- `attention`: scaled dot-product attention via PyTorch SDPA (flash / memory-efficient / math chosen by PyTorch).
- `timestep_embedding`: sinusoidal features of a scalar in [0, 1] (rectified-flow time), as in DiT.
- `modulate`: adaLN, x * (1 + scale) + shift, with per-sample shift and scale broadcast over tokens.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


def timestep_embedding(t_B: torch.Tensor, dim: int, max_period: float = 10000.0) -> torch.Tensor:
    """t in [0, 1] -> [B, dim] sinusoids. t is scaled by 1000 so the frequencies match DiT's integer timesteps."""
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=t_B.device, dtype=torch.float32) / half)
    args = 1000.0 * t_B.float()[:, None] * freqs[None]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class MLPEmbedder(nn.Module):
    """in_dim -> D -> D with SiLU: lifts a timestep or pooled-text vector into the modulation space."""

    def __init__(self, in_dim: int, dim: int):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, dim)
        self.fc2 = nn.Linear(dim, dim)

    def forward(self, x):
        return self.fc2(F.silu(self.fc1(x)))


def rope_2d_freqs(grid_h: int, grid_w: int, head_dim: int, theta: float = 10000.0, device=None) -> torch.Tensor:
    """Complex rotations [N, K/2] for an h x w grid: first K/4 pairs follow the row, the next K/4 the column."""
    assert head_dim % 4 == 0, "2-D RoPE needs head_dim divisible by 4"
    quarter = head_dim // 4
    inv = 1.0 / theta ** (torch.arange(quarter, device=device, dtype=torch.float32) / quarter)  # [K/4]
    ys, xs = torch.meshgrid(torch.arange(grid_h, device=device, dtype=torch.float32),
                            torch.arange(grid_w, device=device, dtype=torch.float32), indexing="ij")
    angles = torch.cat([ys.reshape(-1, 1) * inv, xs.reshape(-1, 1) * inv], dim=-1)  # [N, K/2]
    return torch.polar(torch.ones_like(angles), angles)


def apply_rope(x_BHNK: torch.Tensor, freqs_NK: torch.Tensor) -> torch.Tensor:
    """Rotate consecutive channel pairs of q or k by the per-position complex factors (computed in fp32)."""
    B, H, N, K = x_BHNK.shape
    xc = torch.view_as_complex(x_BHNK.float().reshape(B, H, N, K // 2, 2))
    out = torch.view_as_real(xc * freqs_NK[None, None]).reshape(B, H, N, K)
    return out.type_as(x_BHNK)


def attention(q_BHLK, k_BHLK, v_BHLK, mask_BL: torch.Tensor | None = None) -> torch.Tensor:
    """SDPA over the joint sequence. mask_BL: True where a key is real (text padding is False). Returns [B, L, D]."""
    attn_mask = None if mask_BL is None else mask_BL[:, None, None, :]  # [B, 1, 1, L], broadcast over heads and queries
    out = F.scaled_dot_product_attention(q_BHLK, k_BHLK, v_BHLK, attn_mask=attn_mask)
    B, H, L, K = out.shape
    return out.transpose(1, 2).reshape(B, L, H * K)


def modulate(x_BLD: torch.Tensor, shift_BD: torch.Tensor, scale_BD: torch.Tensor) -> torch.Tensor:
    return x_BLD * (1 + scale_BD[:, None]) + shift_BD[:, None]


class QKNorm(nn.Module):
    """RMSNorm on queries and keys per head (learned scale): keeps attention logits bounded as training goes on."""

    def __init__(self, head_dim: int):
        super().__init__()
        self.q_norm = nn.RMSNorm(head_dim, eps=1e-6)
        self.k_norm = nn.RMSNorm(head_dim, eps=1e-6)

    def forward(self, q, k):
        return self.q_norm(q), self.k_norm(k)


class GeluMLP(nn.Module):
    """D -> ratio*D -> D with tanh-GELU, the MLP of FLUX/SD3 blocks."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))
