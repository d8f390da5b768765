"""The hybrid diffusion transformer (FLUX / SD3 family): maps (x_t, t, text) to its estimate of the clean image.

flow.py turns that estimate into a rectified-flow velocity (and says why the network predicts x_0, not v).

    image x [B, C, H, W] --patchify--> img tokens [B, N, D]        text tokens [B, L, E] --linear--> [B, L, D]
    t [B] --sinusoid+MLP--+                                        pooled text [B, E] --MLP--+
                          +---------------- vec [B, D] (drives every adaLN-Zero modulation) --+
    num_double x DoubleStreamBlock: separate weights for text and image tokens, one joint attention over [txt; img]
    num_single x SingleStreamBlock: one set of weights over the concatenated sequence, attention and MLP in parallel
    final adaLN + linear on the image tokens --unpatchify--> x0_hat [B, C, H, W]

Image tokens carry 2-D RoPE (row/column of their patch); text tokens carry none (their order is already in the
encoder's features). Queries and keys are RMS-normalised per head. Every block starts as the identity (adaLN-Zero: the
gates come from zero-initialised linears), so a fresh network outputs 0.

Shape legend: B batch, C channels, H/W pixels (or latents), P patch size, N image tokens, L text tokens,
S = L + N joint sequence, D width, E text-encoder width, Hd heads, K head dim.
The network knows nothing of noise schedules (flow.py), precision or parallelism (incasa/train/parallelize).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from incasa.nn.layers import (GeluMLP, MLPEmbedder, QKNorm, apply_rope, attention, modulate, rope_2d_freqs,
                              timestep_embedding)


@dataclass(frozen=True)
class DiTConfig:
    in_channels: int = 3  # 3 for pixel space; the autoencoder's latent channels otherwise
    patch_size: int = 8
    width: int = 192
    num_heads: int = 4
    num_double: int = 2
    num_single: int = 4
    mlp_ratio: float = 4.0
    text_dim: int = 384  # width of the text encoder's token features (all-MiniLM-L6-v2: 384)
    # How text padding is handled. 0: padded positions are masked out of attention (a key mask). N > 0 (FLUX-style):
    # the text is zeroed at its padded positions, zero-padded to exactly N tokens and attended in full, with no mask.
    # Why N > 0 for the large presets: SDPA's flash and cuDNN kernels take no mask, and a training batch of captions
    # of different lengths always has padding; with a mask the step falls back to the memory-efficient kernel, 1.47x
    # slower for width-3072 blocks on the H200 (benchmarks/results/train_fp8.json vs train_fp8_flash.json). A fixed
    # length also makes a prompt's output independent of the other prompts in its batch.
    text_len: int = 0


PRESETS: dict[str, DiTConfig] = {
    # tests: < 1M parameters
    "tiny": DiTConfig(patch_size=8, width=32, num_heads=2, num_double=1, num_single=1, text_dim=32),
    # the shipped CPU default: 64x64 pixels, patch 8 -> 64 image tokens
    "small": DiTConfig(patch_size=8, width=192, num_heads=4, num_double=2, num_single=4),
    # the shipped default since it could be trained on a GPU: same tokens, wider and deeper (~11M, 22 MB in fp16)
    "medium": DiTConfig(patch_size=8, width=256, num_heads=4, num_double=2, num_single=6),
    "base": DiTConfig(patch_size=4, width=384, num_heads=6, num_double=4, num_single=8),
    # the large presets attend to 512 text tokens with no mask, as FLUX does with T5 (see text_len)
    "1b": DiTConfig(in_channels=16, patch_size=2, width=1536, num_heads=12, num_double=8, num_single=16, text_dim=1024,
                    text_len=512),
    # the seed's scale: 12 double + 28 single blocks at width 3072 (~8.1B), on 16-channel latents, T5-XXL-sized text
    "8b": DiTConfig(in_channels=16, patch_size=2, width=3072, num_heads=24, num_double=12, num_single=28,
                    text_dim=4096, text_len=512),
}


class DoubleStreamBlock(nn.Module):
    """Text and image tokens keep their own norms, projections and MLPs but attend jointly."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads = num_heads
        hidden = int(dim * mlp_ratio)
        for s in ("img", "txt"):
            setattr(self, f"{s}_mod", nn.Linear(dim, 6 * dim))  # shift/scale/gate for attention and for MLP
            setattr(self, f"{s}_norm1", nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{s}_qkv", nn.Linear(dim, 3 * dim))
            setattr(self, f"{s}_qknorm", QKNorm(dim // num_heads))
            setattr(self, f"{s}_proj", nn.Linear(dim, dim))
            setattr(self, f"{s}_norm2", nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6))
            setattr(self, f"{s}_mlp", GeluMLP(dim, hidden))

    def _qkv(self, s: str, x_BLD, mod):
        x = modulate(getattr(self, f"{s}_norm1")(x_BLD), mod[0], mod[1])
        B, L, D = x.shape
        q, k, v = getattr(self, f"{s}_qkv")(x).view(B, L, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = getattr(self, f"{s}_qknorm")(q, k)  # each [B, Hd, L, K]
        return q, k, v

    def forward(self, img_BND, txt_BLD, vec_BD, freqs, mask_BS):
        img_mod = self.img_mod(F.silu(vec_BD)).chunk(6, dim=-1)
        txt_mod = self.txt_mod(F.silu(vec_BD)).chunk(6, dim=-1)
        iq, ik, iv = self._qkv("img", img_BND, img_mod)
        tq, tk, tv = self._qkv("txt", txt_BLD, txt_mod)
        iq, ik = apply_rope(iq, freqs), apply_rope(ik, freqs)
        L = txt_BLD.shape[1]
        out_BSD = attention(torch.cat([tq, iq], 2), torch.cat([tk, ik], 2), torch.cat([tv, iv], 2), mask_BS)
        txt_attn, img_attn = out_BSD[:, :L], out_BSD[:, L:]
        img_BND = img_BND + img_mod[2][:, None] * self.img_proj(img_attn)
        img_BND = img_BND + img_mod[5][:, None] * self.img_mlp(modulate(self.img_norm2(img_BND), img_mod[3], img_mod[4]))
        txt_BLD = txt_BLD + txt_mod[2][:, None] * self.txt_proj(txt_attn)
        txt_BLD = txt_BLD + txt_mod[5][:, None] * self.txt_mlp(modulate(self.txt_norm2(txt_BLD), txt_mod[3], txt_mod[4]))
        return img_BND, txt_BLD


class SingleStreamBlock(nn.Module):
    """One fused linear gives q, k, v and the MLP input; attention and MLP run in parallel (ViT-22B / FLUX)."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float):
        super().__init__()
        self.num_heads, self.hidden = num_heads, int(dim * mlp_ratio)
        self.mod = nn.Linear(dim, 3 * dim)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.linear1 = nn.Linear(dim, 3 * dim + self.hidden)
        self.qknorm = QKNorm(dim // num_heads)
        self.linear2 = nn.Linear(dim + self.hidden, dim)

    def forward(self, x_BSD, vec_BD, freqs, mask_BS, num_txt: int):
        shift, scale, gate = self.mod(F.silu(vec_BD)).chunk(3, dim=-1)
        B, S, D = x_BSD.shape
        qkv, mlp_in = self.linear1(modulate(self.norm(x_BSD), shift, scale)).split([3 * D, self.hidden], dim=-1)
        q, k, v = qkv.view(B, S, 3, self.num_heads, D // self.num_heads).permute(2, 0, 3, 1, 4)
        q, k = self.qknorm(q, k)
        # rotate only the image part of the sequence
        q = torch.cat([q[:, :, :num_txt], apply_rope(q[:, :, num_txt:], freqs)], 2)
        k = torch.cat([k[:, :, :num_txt], apply_rope(k[:, :, num_txt:], freqs)], 2)
        out = torch.cat([attention(q, k, v, mask_BS), F.gelu(mlp_in, approximate="tanh")], dim=-1)
        return x_BSD + gate[:, None] * self.linear2(out)


class DiT(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        assert cfg.width % cfg.num_heads == 0 and (cfg.width // cfg.num_heads) % 4 == 0, "head dim must divide by 4"
        self.cfg = cfg
        D, P, C = cfg.width, cfg.patch_size, cfg.in_channels
        self.img_in = nn.Linear(C * P * P, D)
        self.txt_in = nn.Linear(cfg.text_dim, D)
        self.time_in = MLPEmbedder(256, D)
        self.pooled_in = MLPEmbedder(cfg.text_dim, D)
        self.double_blocks = nn.ModuleList(DoubleStreamBlock(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.num_double))
        self.single_blocks = nn.ModuleList(SingleStreamBlock(D, cfg.num_heads, cfg.mlp_ratio) for _ in range(cfg.num_single))
        self.final_mod = nn.Linear(D, 2 * D)
        self.final_norm = nn.LayerNorm(D, elementwise_affine=False, eps=1e-6)
        self.final_out = nn.Linear(D, C * P * P)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        # adaLN-Zero: all modulations start at zero, so every block is the identity and the output is 0
        for block in self.double_blocks:
            for lin in (block.img_mod, block.txt_mod):
                nn.init.zeros_(lin.weight)
        for block in self.single_blocks:
            nn.init.zeros_(block.mod.weight)
        for lin in (self.final_mod, self.final_out):
            nn.init.zeros_(lin.weight)

    def forward(self, x_BCHW, t_B, txt_BLE, txt_mask_BL, pooled_BE):
        cfg, P = self.cfg, self.cfg.patch_size
        B, C, H, W = x_BCHW.shape
        if H % P or W % P:
            raise ValueError(f"image size {H}x{W} is not a multiple of the patch size {P}")
        h, w = H // P, W // P
        patches = x_BCHW.reshape(B, C, h, P, w, P).permute(0, 2, 4, 1, 3, 5).reshape(B, h * w, C * P * P)
        if cfg.text_len:  # FLUX-style (DiTConfig.text_len): zero the padding, pad to the fixed length, no mask
            L = txt_BLE.shape[1]
            if L > cfg.text_len:
                raise ValueError(f"the text has {L} tokens; this model takes at most {cfg.text_len}")
            if txt_mask_BL is not None:
                txt_BLE = txt_BLE * txt_mask_BL[..., None].to(txt_BLE.dtype)
            txt_BLE, txt_mask_BL = F.pad(txt_BLE, (0, 0, 0, cfg.text_len - L)), None  # [B, text_len, E]
        img = self.img_in(patches)  # [B, N, D]
        txt = self.txt_in(txt_BLE)  # [B, L, D]
        vec = self.time_in(timestep_embedding(t_B, 256).to(img.dtype)) + self.pooled_in(pooled_BE)  # [B, D]
        freqs = rope_2d_freqs(h, w, cfg.width // cfg.num_heads, device=x_BCHW.device)  # [N, K/2]
        L = txt.shape[1]
        # txt_mask_BL None means every text token is real: no mask lets SDPA pick its fastest (flash) kernels
        mask_BS = (None if txt_mask_BL is None else
                   torch.cat([txt_mask_BL.bool(), txt_mask_BL.new_ones(B, h * w, dtype=torch.bool)], dim=1))
        for block in self.double_blocks:
            img, txt = block(img, txt, vec, freqs, mask_BS)
        x = torch.cat([txt, img], dim=1)
        for block in self.single_blocks:
            x = block(x, vec, freqs, mask_BS, L)
        img = x[:, L:]
        shift, scale = self.final_mod(F.silu(vec)).chunk(2, dim=-1)
        out = self.final_out(modulate(self.final_norm(img), shift, scale))  # [B, N, C*P*P]
        return out.reshape(B, h, w, C, P, P).permute(0, 3, 1, 4, 2, 5).reshape(B, C, H, W)


def count_parameters(cfg: DiTConfig) -> int:
    """Parameters of a preset, counted on the meta device (no memory is allocated, so 8b counts on a laptop)."""
    with torch.device("meta"):
        model = DiT(cfg)
    return sum(p.numel() for p in model.parameters())
