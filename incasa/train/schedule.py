"""Learning-rate schedule: linear warmup, then cosine decay to min_ratio * base."""

import math


def lr_at(step: int, *, base: float, warmup: int, total: int, min_ratio: float = 0.1) -> float:
    if step < warmup:
        return base * (step + 1) / warmup
    progress = min(1.0, (step - warmup) / max(1, total - warmup))
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * progress)))
