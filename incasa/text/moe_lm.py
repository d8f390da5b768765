"""A decoder-only mixture-of-experts language model, and its dense twin with the same active parameters.

Shape legend: B batch, L new tokens, S cache slots (keys), D width, H query heads, G key/value heads, K head dim,
V vocabulary.

Architecture (Llama/DeepSeek family at small scale): token embedding -> depth x [RMSNorm -> grouped-query
attention with RoPE (SDPA) -> residual; RMSNorm -> MoE feed-forward (incasa.nn.moe) or SwiGLU -> residual] ->
RMSNorm -> output head tied to the embedding. The model knows nothing of devices, precision or parallelism.

The forward takes optional per-row positions, a KV cache and a key-validity mask, which is all batched generation
with left padding needs: a padded row's tokens are invisible to the other tokens, and every query may always
attend to itself, so padding never produces an all-masked row (NaN) in SDPA.

`PRESETS` runs from `tiny` (tests) to `large`; parameter counts come from building the model on the meta device
(`count_params`), never from a formula that could drift from the code. Every MoE preset has a `-dense` twin whose
SwiGLU hidden width equals the MoE's active expert width, for the quality comparison at equal compute.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn.functional as F
from torch import nn

from incasa.nn.moe import MoE, MoEConfig, SwiGLU


@dataclass(frozen=True)
class LMConfig:
    vocab_size: int = 8192
    dim: int = 256
    depth: int = 4
    num_heads: int = 8
    num_kv_heads: int = 2  # grouped-query attention: H query heads share G key/value heads
    max_seq_len: int = 512
    num_experts: int = 8  # 0 = dense model (SwiGLU with dense_hidden)
    top_k: int = 2
    expert_hidden: int = 256
    num_shared_experts: int = 1
    dense_hidden: int = 0
    score_func: str = "softmax"
    balance_loss_weight: float = 0.0
    z_loss_weight: float = 0.0
    rope_theta: float = 10000.0
    dispatch: str = "auto"

    def __post_init__(self):
        if self.dim % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError(f"dim {self.dim} must divide into {self.num_heads} heads, and heads into "
                             f"{self.num_kv_heads} key/value groups")
        if (self.dim // self.num_heads) % 2:
            raise ValueError("head dim must be even for RoPE")
        if self.num_experts == 0 and self.dense_hidden <= 0:
            raise ValueError("a dense model (num_experts=0) needs dense_hidden > 0")

    @property
    def head_dim(self) -> int:
        return self.dim // self.num_heads

    def moe(self) -> MoEConfig:
        return MoEConfig(dim=self.dim, num_experts=self.num_experts, top_k=self.top_k, expert_hidden=self.expert_hidden,
                         num_shared_experts=self.num_shared_experts, score_func=self.score_func,
                         balance_loss_weight=self.balance_loss_weight, z_loss_weight=self.z_loss_weight,
                         dispatch=self.dispatch)


def dense_twin(cfg: LMConfig) -> LMConfig:
    """The dense model with the same active parameters per token: SwiGLU hidden = (k + shared) * expert hidden."""
    return replace(cfg, num_experts=0, dense_hidden=(cfg.top_k + cfg.num_shared_experts) * cfg.expert_hidden)


_MOE_PRESETS = {
    "tiny": LMConfig(vocab_size=512, dim=64, depth=2, num_heads=4, num_kv_heads=2, max_seq_len=128,
                     num_experts=4, top_k=2, expert_hidden=32, num_shared_experts=1),
    # the shipped default: ~8M parameters (fits 25 MB in fp16), 2 of 8 experts + a shared one per token; a small
    # sequence balance loss beside the bias (benchmarks/text_balance.py: batch content skews the load, which the
    # per-step bias alone chases; on the H200 it took expert load max/mean from 1.38 to 1.17 in the worst layer)
    "small": LMConfig(vocab_size=4096, dim=256, depth=4, num_heads=8, num_kv_heads=2, max_seq_len=256,
                      num_experts=8, top_k=2, expert_hidden=256, num_shared_experts=1, balance_loss_weight=3e-3),
    "base": LMConfig(vocab_size=32768, dim=768, depth=12, num_heads=12, num_kv_heads=4, max_seq_len=2048,
                     num_experts=64, top_k=6, expert_hidden=256, num_shared_experts=2, score_func="sigmoid",
                     balance_loss_weight=1e-4),
    # DeepSeek-V2-Lite-like proportions; counted on the meta device, trained with FSDP2 on many GPUs
    "large": LMConfig(vocab_size=65536, dim=2048, depth=24, num_heads=16, num_kv_heads=4, max_seq_len=4096,
                      num_experts=64, top_k=8, expert_hidden=1024, num_shared_experts=2, score_func="sigmoid",
                      balance_loss_weight=1e-4),
}
PRESETS: dict[str, LMConfig] = {**_MOE_PRESETS, **{f"{k}-dense": dense_twin(v) for k, v in _MOE_PRESETS.items()}}


# ---------------------------------------------------------------- attention with RoPE and a KV cache


def rope_table(max_len: int, head_dim: int, theta: float, device=None) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin of every position's angles, [max_len, K/2] each, float32.

    A table looked up by position rather than cos/sin computed in the forward: under torch.compile the latter is fused
    into every consumer and recomputed there (cos and sin of B*H*L*K/2 angles in each layer's RoPE kernels, forward
    and backward): 16 % of a training step of the `base` preset on the H200 (benchmarks/text_gpu.py --profile)."""
    inv = 1.0 / theta ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim)
    angles = torch.arange(max_len, device=device, dtype=torch.float32)[:, None] * inv  # [max_len, K/2]
    return angles.cos(), angles.sin()


def apply_rope(x_BHLK: torch.Tensor, cos, sin) -> torch.Tensor:
    """Rotate-half RoPE (Llama/GPT-NeoX convention), computed in fp32."""
    x1, x2 = x_BHLK.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1).type_as(x_BHLK)


class KVCache:
    """Keys and values of every layer for up to `max_slots` positions, shared slot index across the batch."""

    def __init__(self, cfg: LMConfig, batch: int, max_slots: int, device, dtype):
        shape = (cfg.depth, batch, cfg.num_kv_heads, max_slots, cfg.head_dim)
        self.k = torch.zeros(shape, device=device, dtype=dtype)
        self.v = torch.zeros(shape, device=device, dtype=dtype)
        self.length = 0  # filled slots

    @property
    def max_slots(self) -> int:
        return self.k.shape[3]


class Attention(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        K = cfg.head_dim
        self.wq = nn.Linear(cfg.dim, cfg.num_heads * K, bias=False)
        self.wkv = nn.Linear(cfg.dim, 2 * cfg.num_kv_heads * K, bias=False)
        self.wo = nn.Linear(cfg.num_heads * K, cfg.dim, bias=False)

    def forward(self, x_BLD, cos, sin, mask_BLS=None, cache: KVCache | None = None, layer: int = 0):
        B, L, _ = x_BLD.shape
        H, G, K = self.cfg.num_heads, self.cfg.num_kv_heads, self.cfg.head_dim
        q = self.wq(x_BLD).view(B, L, H, K).transpose(1, 2)
        k, v = self.wkv(x_BLD).view(B, L, 2, G, K).permute(2, 0, 3, 1, 4)  # each [B, G, L, K]
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            s0 = cache.length
            cache.k[layer, :, :, s0:s0 + L] = k.to(cache.k.dtype)
            cache.v[layer, :, :, s0:s0 + L] = v.to(cache.v.dtype)
            k, v = cache.k[layer, :, :, :s0 + L].to(q.dtype), cache.v[layer, :, :, :s0 + L].to(q.dtype)
        if mask_BLS is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask_BLS[:, None], enable_gqa=True)
        return self.wo(out.transpose(1, 2).reshape(B, L, H * K))


class Block(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.attn_norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        self.attn = Attention(cfg)
        self.ffn_norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        self.ffn = MoE(cfg.moe()) if cfg.num_experts else SwiGLU(cfg.dim, cfg.dense_hidden)

    def forward(self, x, cos, sin, mask=None, cache=None, layer=0):
        x = x + self.attn(self.attn_norm(x), cos, sin, mask, cache, layer)
        h = self.ffn(self.ffn_norm(x))
        if isinstance(h, tuple):  # MoE: (output, auxiliary loss)
            return x + h[0], h[1]
        return x + h, x.new_zeros((), dtype=torch.float32)


class MoELM(nn.Module):
    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab_size, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.RMSNorm(cfg.dim, eps=1e-6)
        # not persistent: derived from the config, so checkpoints are unchanged
        cos, sin = rope_table(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta)
        self.register_buffer("rope_cos", cos, persistent=False)
        self.register_buffer("rope_sin", sin, persistent=False)
        self.reset_parameters()

    def _apply(self, fn, recurse=True):
        """Every cast and move (.to, .half, .cuda, to_empty) goes through here: rebuild the RoPE table afterwards, in
        float32 on the new device, so a model cast to bf16 for inference keeps exact angles (the table is small)."""
        super()._apply(fn, recurse)
        cfg = self.cfg
        self.rope_cos, self.rope_sin = rope_table(cfg.max_seq_len, cfg.head_dim, cfg.rope_theta, self.rope_cos.device)
        return self

    def reset_parameters(self):
        nn.init.normal_(self.embed.weight, std=0.02)
        for name, p in self.named_parameters():
            if p.dim() >= 2 and "embed" not in name:  # linears and the stacked expert weights
                nn.init.normal_(p, std=0.02)
            if name.endswith(("wo.weight", "w2.weight", "ffn.w2")):  # GPT-2: scale residual writes by depth
                nn.init.normal_(p, std=0.02 / math.sqrt(2 * self.cfg.depth))

    def forward(self, tokens_BL: torch.Tensor, *, positions_BL=None, cache: KVCache | None = None,
                key_valid_BS: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (logits_BLV in fp32, auxiliary router loss summed over layers).

        Training: tokens only (causal attention, positions 0..L-1). Generation: positions per row, a cache, and
        key_valid_BS (False for left padding) covering all cache slots up to and including the new tokens."""
        B, L = tokens_BL.shape
        s0 = cache.length if cache is not None else 0
        if positions_BL is None:
            last = s0 + L - 1
            positions_BL = torch.arange(s0, s0 + L, device=tokens_BL.device).expand(B, L)
        else:
            last = int(positions_BL.max())
        if last >= self.cfg.max_seq_len:
            raise ValueError(f"sequence longer than the model's context of {self.cfg.max_seq_len} tokens")
        mask = None
        if cache is not None or key_valid_BS is not None:
            S = s0 + L
            if key_valid_BS is None:
                key_valid_BS = torch.ones(B, S, dtype=torch.bool, device=tokens_BL.device)
            q_slot = torch.arange(s0, S, device=tokens_BL.device)[:, None]
            k_slot = torch.arange(S, device=tokens_BL.device)[None, :]
            mask = ((k_slot <= q_slot)[None] & key_valid_BS[:, None, :]) | (k_slot == q_slot)[None]  # [B, L, S]
        # [B, 1, L, K/2] each, broadcast over heads; the table is float32 whatever the model's dtype (_apply)
        cos, sin = self.rope_cos[positions_BL][:, None], self.rope_sin[positions_BL][:, None]
        x = self.embed(tokens_BL)
        aux = x.new_zeros((), dtype=torch.float32)
        for i, block in enumerate(self.blocks):
            x, a = block(x, cos, sin, mask, cache, i)
            aux = aux + a
        if cache is not None:
            cache.length = s0 + L
        logits = F.linear(self.norm(x), self.embed.weight).float()  # output head tied to the embedding
        return logits, aux


def count_params(cfg: LMConfig) -> dict[str, int]:
    """Total and active (per token) parameters, counted on the meta device (no memory, any size)."""
    with torch.device("meta"):
        model = MoELM(cfg)
    total = sum(p.numel() for p in model.parameters())
    embed = model.embed.weight.numel()
    inactive = 0
    if cfg.num_experts:
        per_expert = 3 * cfg.dim * cfg.expert_hidden
        inactive = cfg.depth * (cfg.num_experts - cfg.top_k) * per_expert
    return {"total": total, "active": total - inactive, "embedding": embed,
            "active_non_embedding": total - inactive - embed}


def config_from_dict(d: dict) -> LMConfig:
    known = set(LMConfig.__dataclass_fields__)
    return LMConfig(**{k: v for k, v in d.items() if k in known})


def config_dict(cfg: LMConfig) -> dict:
    return asdict(cfg)
