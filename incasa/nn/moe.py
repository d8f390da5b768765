"""A mixture-of-experts feed-forward layer: token-choice top-k routing over fine-grained SwiGLU experts.

Shape legend: B batch, L sequence, D model width, N = B*L tokens, E routed experts, k experts per token,
H hidden width of one expert, A = N*k token-expert assignments.

How a token flows (DeepSeek-V3 style, as in torchtitan's MoE):
  1. Router: logits_NE = x @ W_r; scores = softmax (or sigmoid) of the logits, computed in fp32.
  2. Selection: the k experts with the highest `scores + bias`. The bias is a per-expert buffer that affects
     *selection only* -- the weights that scale the expert outputs come from the unbiased scores. This is
     auxiliary-loss-free load balancing: after every optimizer step `update_balance_bias` nudges the bias of
     overloaded experts down and of underloaded experts up, so load evens out without a loss term pulling
     against the language-modelling objective. Rules (`bias_step`): `sign` (DeepSeek-V3: a fixed step of the
     sign of the load error, which dithers by +-rate for ever once balanced), `proportional` (the step follows
     the relative error, clipped) and `adaptive` (sign steps whose size grows while an expert stays on one side
     and halves when it crosses over, as Rprop does for weights: fast catch-up, little dither).
  3. Dispatch (dropless): the A assignments are sorted by expert, so each expert's tokens are one contiguous
     slice; one grouped matrix multiplication (`torch._grouped_mm`) runs all experts at once with per-expert
     offsets. Where grouped mm is unavailable for the device/dtype, a per-expert loop computes the same thing.
  4. Combine: expert outputs are scaled by their routing weights and summed back per token. The un-sort is a
     scatter into a fresh [A, D] buffer followed by a sum over k -- deterministic, unlike index_add's atomics.
  5. An optional shared expert (a plain SwiGLU every token goes through) is added, as in DeepSeekMoE.

Optional losses (returned, not applied): the sequence-level balance loss of DeepSeek-V3 (a small weight keeps a
single sequence from collapsing onto few experts) and the router z-loss of ST-MoE (keeps router logits small).
The layer also records, while training, how many assignments each expert received (for the bias update and the
`load max/mean` metric) and the mean router entropy.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class MoEConfig:
    dim: int
    num_experts: int = 8
    top_k: int = 2
    expert_hidden: int = 256
    num_shared_experts: int = 0  # the shared expert's hidden width is num_shared_experts * expert_hidden
    score_func: str = "softmax"  # softmax | sigmoid (DeepSeek-V3 uses sigmoid)
    norm_topk: bool = True  # renormalise the k selected weights to sum to 1
    route_scale: float = 1.0  # the selected weights then sum to route_scale (when norm_topk)
    balance_loss_weight: float = 0.0  # sequence-level balance loss (DeepSeek-V3 uses ~1e-4)
    z_loss_weight: float = 0.0  # router z-loss (ST-MoE uses 1e-3)
    dispatch: str = "auto"  # auto (grouped mm where it works, else loop) | grouped | loop

    def __post_init__(self):
        if not 1 <= self.top_k <= self.num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={self.num_experts}], got {self.top_k}")
        if self.score_func not in ("softmax", "sigmoid"):
            raise ValueError(f"score_func must be softmax or sigmoid, got {self.score_func!r}")
        if self.dispatch not in ("auto", "grouped", "loop"):
            raise ValueError(f"dispatch must be auto, grouped or loop, got {self.dispatch!r}")


class SwiGLU(nn.Module):
    """D -> H -> D with a SiLU-gated linear unit (Shazeer 2020); the FFN of Llama, and each expert here."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.w13 = nn.Linear(dim, 2 * hidden, bias=False)  # gate and up projections fused
        self.w2 = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        gate, up = self.w13(x).chunk(2, dim=-1)
        return self.w2(F.silu(gate) * up)


# ---------------------------------------------------------------- grouped matrix multiplication


def _mm_loop(x_AD: torch.Tensor, w_EOD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
    """Reference: each expert's contiguous slice times its own weight (one host sync for the counts)."""
    outs = [xs @ w.t() for xs, w in zip(x_AD.split(counts_E.tolist()), w_EOD)]
    return torch.cat(outs) if outs else x_AD.new_zeros(0, w_EOD.shape[1])


def _mm_grouped(x_AD: torch.Tensor, w_EOD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
    offs = counts_E.cumsum(0).to(torch.int32)  # end offset of each expert's slice
    return torch._grouped_mm(x_AD, w_EOD.transpose(-2, -1), offs=offs)


@functools.lru_cache(maxsize=None)
def grouped_mm_works(device_type: str, dtype: torch.dtype) -> bool:
    """Probe once per (device, dtype): does torch._grouped_mm exist, run forward + backward, and match the loop?"""
    if not hasattr(torch, "_grouped_mm"):
        return False
    try:
        g = torch.Generator().manual_seed(0)
        x = torch.randn(48, 32, generator=g).to(device_type, dtype)
        w = torch.randn(4, 16, 32, generator=g).to(device_type, dtype)
        up = torch.randn(48, 16, generator=g).to(device_type, dtype)
        counts = torch.tensor([5, 0, 27, 16], device=device_type)  # unaligned and empty groups, as in real use
        results = []
        for mm in (_mm_grouped, _mm_loop):
            xi, wi = x.clone().requires_grad_(), w.clone().requires_grad_()
            y = mm(xi, wi, counts)
            y.backward(up)
            results.append((y.detach().float(), xi.grad.float(), wi.grad.float()))
        return all(torch.allclose(a, b, atol=5e-2, rtol=5e-2) for a, b in zip(*results))
    except (RuntimeError, NotImplementedError, TypeError):
        return False


def expert_mm(x_AD: torch.Tensor, w_EOD: torch.Tensor, counts_E: torch.Tensor, dispatch: str = "auto") -> torch.Tensor:
    """[A, D] rows sorted by expert, times the expert's [O, D] weight -> [A, O]."""
    # under torch.compile the grouped mm's shape rule accepts bf16 only (torch 2.11-2.13), though eager CPU runs it
    # in float32 too: `auto` then takes the loop rather than failing to trace
    traceable = x_AD.dtype == torch.bfloat16 or not torch.compiler.is_compiling()
    if dispatch == "loop" or (dispatch == "auto" and not (traceable and grouped_mm_works(x_AD.device.type, x_AD.dtype))):
        return _mm_loop(x_AD, w_EOD, counts_E)
    return _mm_grouped(x_AD, w_EOD, counts_E)


# ---------------------------------------------------------------- dispatch


class _DispatchRows(torch.autograd.Function):
    """x_ND[order_A // k] -> [A, D]: each token copied to its k assignment rows, in expert order.

    Autograd's own backward of that indexing is an index_put with accumulation: A rows added into [N, D] with atomic
    adds (on the H200 the largest non-GEMM kernel of a step, ~5 %, and not deterministic). Every token appears exactly
    k times and `order` is a permutation of the assignments a = n*k + j, so the gradient is an un-sort (a scatter
    without collisions) followed by a sum over the k copies: no atomics, deterministic, the sum accumulated in fp32
    by torch.sum."""

    @staticmethod
    def forward(ctx, x_ND: torch.Tensor, order_A: torch.Tensor, k: int) -> torch.Tensor:
        ctx.save_for_backward(order_A)
        ctx.k = k
        return x_ND[order_A // k]

    @staticmethod
    def backward(ctx, g_AD: torch.Tensor):
        (order_A,) = ctx.saved_tensors
        g = torch.empty_like(g_AD).index_copy_(0, order_A, g_AD)  # back to assignment order a = n*k + j
        return g.view(-1, ctx.k, g_AD.shape[-1]).sum(1), None, None


def dispatch_rows(x_ND: torch.Tensor, order_A: torch.Tensor, k: int) -> torch.Tensor:
    return _DispatchRows.apply(x_ND, order_A, k)


# ---------------------------------------------------------------- the layer


class MoE(nn.Module):
    def __init__(self, cfg: MoEConfig):
        super().__init__()
        self.cfg = cfg
        E, D, H = cfg.num_experts, cfg.dim, cfg.expert_hidden
        self.router = nn.Linear(D, E, bias=False)
        self.w13 = nn.Parameter(torch.empty(E, 2 * H, D))  # per expert: gate and up, fused
        self.w2 = nn.Parameter(torch.empty(E, D, H))
        nn.init.normal_(self.w13, std=D ** -0.5)
        nn.init.normal_(self.w2, std=H ** -0.5)
        self.shared = SwiGLU(D, cfg.num_shared_experts * H) if cfg.num_shared_experts else None
        # selection bias (persistent: part of the trained model, checkpointed) and the load seen since the last
        # bias update (not persistent: emptied at every optimizer step)
        self.register_buffer("expert_bias", torch.zeros(E))
        self.register_buffer("tokens_per_expert", torch.zeros(E), persistent=False)
        self.last_entropy = torch.zeros(())
        self.balance_state: dict[str, torch.Tensor] = {}  # the bias controller's memory (see update_balance_bias)

    def route(self, x_ND: torch.Tensor):
        """-> (indices_Nk, weights_Nk, scores_NE, logits_NE); the bias enters the choice, never the weights."""
        logits = self.router(x_ND).float()
        scores = logits.softmax(-1) if self.cfg.score_func == "softmax" else logits.sigmoid()
        _, idx = torch.topk(scores + self.expert_bias, self.cfg.top_k, dim=-1)
        weights = scores.gather(-1, idx)
        if self.cfg.norm_topk:
            weights = weights / weights.sum(-1, keepdim=True).clamp_min(1e-20)
        return idx, weights * self.cfg.route_scale, scores, logits

    def experts(self, x_AD: torch.Tensor, counts_E: torch.Tensor) -> torch.Tensor:
        # grouped mm has no autocast rule: cast to the autocast dtype here so bf16 training uses bf16 GEMMs
        dev = x_AD.device.type
        dtype = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else x_AD.dtype
        x, w13, w2 = x_AD.to(dtype), self.w13.to(dtype), self.w2.to(dtype)
        gate, up = expert_mm(x, w13, counts_E, self.cfg.dispatch).chunk(2, dim=-1)
        return expert_mm(F.silu(gate) * up, w2, counts_E, self.cfg.dispatch)

    def forward(self, x_BLD: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """-> (y_BLD, aux_loss) where aux_loss is the weighted sum of the optional balance and z losses."""
        B, L, D = x_BLD.shape
        E, k = self.cfg.num_experts, self.cfg.top_k
        x = x_BLD.reshape(B * L, D)
        idx_Nk, w_Nk, scores_NE, logits_NE = self.route(x)

        flat = idx_Nk.reshape(-1)  # [A] expert of each assignment
        order = torch.argsort(flat, stable=True)  # assignments grouped by expert
        # counts with a static shape [E]: bincount's output size depends on the data, which breaks torch.compile's
        # graph at every layer and waits for the GPU (a host sync) to learn the size
        counts = torch.zeros(E, dtype=torch.int64, device=flat.device).scatter_add_(0, flat, torch.ones_like(flat))
        out_AD = self.experts(dispatch_rows(x, order, k), counts)
        out_AD = out_AD * w_Nk.reshape(-1)[order, None].to(out_AD.dtype)
        y = torch.empty_like(out_AD).index_copy_(0, order, out_AD).view(B * L, k, D).sum(1)  # un-sort, combine
        if self.shared is not None:
            y = y + self.shared(x)

        aux = x.new_zeros((), dtype=torch.float32)
        if self.cfg.balance_loss_weight > 0:
            balance = sequence_balance_loss(idx_Nk.view(B, L, k), scores_NE.view(B, L, E))
            aux = aux + self.cfg.balance_loss_weight * balance
        if self.cfg.z_loss_weight > 0:
            aux = aux + self.cfg.z_loss_weight * torch.logsumexp(logits_NE, -1).square().mean()
        if self.training:
            with torch.no_grad():
                self.tokens_per_expert += counts.to(self.tokens_per_expert.dtype)
                p = scores_NE / scores_NE.sum(-1, keepdim=True)
                self.last_entropy = -(p * p.clamp_min(1e-20).log()).sum(-1).mean()
        return y.view(B, L, D), aux


def sequence_balance_loss(idx_BLk: torch.Tensor, scores_BLE: torch.Tensor) -> torch.Tensor:
    """DeepSeek-V3 eq. 17-20: per sequence, sum_i f_i * P_i with f_i = E/(k L) * #tokens choosing i and P_i the
    mean normalised score of expert i; 1.0 when perfectly balanced, up to E/k when collapsed."""
    B, L, k = idx_BLk.shape
    E = scores_BLE.shape[-1]
    f = torch.zeros(B, E, device=idx_BLk.device).scatter_add_(1, idx_BLk.reshape(B, -1),
                                                            torch.ones(B, L * k, device=idx_BLk.device))
    f = f * E / (k * L)
    P = (scores_BLE / scores_BLE.sum(-1, keepdim=True)).mean(1)
    return (f * P).sum(-1).mean()


BIAS_RULES = ("sign", "proportional", "adaptive")
ADAPT_UP, ADAPT_DOWN = 1.2, 0.5  # adaptive: grow the step on a repeated sign, halve it on a flip


def bias_step(load_E: torch.Tensor, rate: float, rule: str = "sign", band: float = 0.1,
              state: dict[str, torch.Tensor] | None = None, floor: float = 0.1) -> torch.Tensor:
    """The bias change for one layer from its load (assignments per expert, or any positive load estimate).

    sign          rate * sign(mean - load): DeepSeek-V3's rule. The step never shrinks, so an expert near its
                  share flips between over and under every step and its bias dithers by +-rate for ever.
    proportional  rate * clamp((mean - load) / (band * mean), -1, 1): the full step while an expert is off by more
                  than `band` of the mean, a step proportional to the error inside it. Converges where the load is
                  not too sensitive to the bias (gain rate/band times that sensitivity below 2); oscillates where
                  it is, and the sensitivity is a property of the router that changes during training.
    adaptive      sign steps with a per-expert step size, as Rprop does for weights: x1.2 while the sign of the
                  error repeats (the bias lags: catch up), x0.5 when it flips (it overshot or only noise is left:
                  settle), kept within [floor * rate, rate]. Needs no knowledge of the sensitivity; `state` holds
                  the step sizes and last signs between calls (created on the first call). The floor matters: a
                  batch's content flips the sign at random, and random flips shrink the step (x0.6 per pair), so
                  with floor 0.01 the step sat at the floor and the bias lagged the training router
                  (benchmarks/text_balance.py); 0.1 keeps DeepSeek-V3's 1e-3 as the settled step for rate 1e-2.
    The proportional and adaptive steps are centred (zero mean): top-k of scores + bias ignores a uniform shift,
    and a centred bias stays readable; `sign` is kept exactly as DeepSeek-V3 (and the shipped default) had it."""
    if rule not in BIAS_RULES:
        raise ValueError(f"bias update rule must be one of {', '.join(BIAS_RULES)}, got {rule!r}")
    mean = load_E.mean()
    if rule == "sign":
        return rate * torch.sign(mean - load_E)
    if rule == "proportional":
        if band <= 0:
            raise ValueError(f"band must be > 0, got {band}")
        step = rate * ((mean - load_E) / (band * mean.clamp_min(1e-20))).clamp(-1.0, 1.0)
        return step - step.mean()
    if state is None:
        raise ValueError("the adaptive rule needs a state dict to keep its step sizes in")
    sign = torch.sign(mean - load_E)
    size = state.get("step")
    if size is None:
        size = torch.full_like(load_E, rate, dtype=torch.float32)
    else:
        repeat = sign * state["sign"]
        size = torch.where(repeat > 0, size * ADAPT_UP, torch.where(repeat < 0, size * ADAPT_DOWN, size))
        size = size.clamp(floor * rate, rate)
    state["step"], state["sign"] = size, sign
    step = size * sign
    return step - step.mean()


@torch.no_grad()
def update_balance_bias(model: nn.Module, rate: float, rule: str = "sign", band: float = 0.1,
                        load_ema: float = 0.0, floor: float = 0.1) -> dict[str, float]:
    """After an optimizer step: move the selection bias of every MoE layer toward even load (see `bias_step`),
    then empty the counters.

    load_ema > 0 steers by an exponential moving average of each expert's share of the load (decay `load_ema`)
    instead of the last step's load alone: less noise from one batch, more lag (with `adaptive` the lag makes the
    step grow while the load has already crossed over: it oscillated on the skewed toy of the tests; don't
    combine them). The controller's state (the EMA, the adaptive step sizes) lives in each layer's
    `balance_state` dict -- an attribute, not a buffer, so the model's state_dict and checkpoints stay as they
    were; `balance_state_dict` / `load_balance_state` carry it through a training checkpoint. Returns the load
    statistics of the step (max/mean over experts, worst layer and mean over layers) and the mean router
    entropy, for the metrics log."""
    if rule not in BIAS_RULES:
        raise ValueError(f"bias update rule must be one of {', '.join(BIAS_RULES)}, got {rule!r}")
    if not 0.0 <= load_ema < 1.0:
        raise ValueError(f"load_ema must be in [0, 1), got {load_ema}")
    if not 0.0 < floor <= 1.0:
        raise ValueError(f"floor must be in (0, 1], got {floor}")
    ratios, entropies = [], []
    for m in model.modules():
        if isinstance(m, MoE):
            load = m.tokens_per_expert
            if load.sum() == 0:
                continue
            ratios.append(float(load.max() / load.mean()))
            entropies.append(float(m.last_entropy))
            steer = load
            if load_ema > 0:
                share = load / load.sum()
                prev = m.balance_state.get("share_ema")
                steer = share if prev is None else load_ema * prev + (1.0 - load_ema) * share
                m.balance_state["share_ema"] = steer
            if rate > 0:
                m.expert_bias += bias_step(steer, rate, rule, band, m.balance_state, floor)
            load.zero_()
    if not ratios:
        return {}
    return {"load_max_over_mean": max(ratios), "load_max_over_mean_avg": sum(ratios) / len(ratios),
            "router_entropy": sum(entropies) / len(entropies)}


def balance_state_dict(model: nn.Module) -> dict[str, list[float]]:
    """The balancing controller's state of every MoE layer as JSON-ready lists (float32 values survive exactly)."""
    return {f"{name}.{key}": t.tolist() for name, m in model.named_modules() if isinstance(m, MoE)
            for key, t in m.balance_state.items()}


def load_balance_state(model: nn.Module, state: dict[str, list[float]]) -> None:
    layers = {name: m for name, m in model.named_modules() if isinstance(m, MoE)}
    for full, values in state.items():
        name, key = full.rsplit(".", 1)
        if name not in layers:
            raise ValueError(f"balance state names layer {name!r}, which this model does not have")
        layers[name].balance_state[key] = torch.tensor(values, dtype=torch.float32,
                                                       device=layers[name].expert_bias.device)
