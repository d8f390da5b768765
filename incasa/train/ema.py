"""Exponential moving average of weights: the sampled model is the EMA, which is smoother than the last step."""

import torch


@torch.no_grad()
def ema_update(ema: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        e.lerp_(p.detach().to(e.dtype), 1.0 - decay)


def ema_decay_at(step: int, decay: float) -> float:
    """Warm the EMA up: early on average over ~step steps, not ~1/(1-decay), or it clings to the random init."""
    return min(decay, (1 + step) / (10 + step))
