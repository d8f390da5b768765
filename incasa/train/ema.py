"""Exponential moving average of weights: the sampled model is the EMA, which is smoother than the last step."""

import torch


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    e_params, m_params = list(ema.parameters()), list(model.parameters())
    if len(e_params) != len(m_params):
        raise ValueError(f"EMA has {len(e_params)} parameters, the model {len(m_params)}")
    # one fused kernel per dtype group on GPUs instead of one launch per tensor
    torch._foreach_lerp_(e_params, [p.detach().to(e.dtype) for e, p in zip(e_params, m_params)], 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm the EMA up: early on average over ~step steps, not ~1/(1-decay), or it clings to the random init."""
    return min(decay, (1 + step) / (10 + step))
