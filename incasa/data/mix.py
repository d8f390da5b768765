"""Quota mixing: pick samples so that the output's category shares track the targets at every size.

Deficit-based selection (the "chairman assignment" greedy): before taking the (n+1)-th sample, every category c has
a deficit ``share_c * (n + 1) - count_c``; take the next sample of the category with the largest deficit. This
keeps every prefix of the output within one sample of its targets, ``|count_c - share_c * n| < 1`` — so within ±1
percentage point from n = 100 on (below that no rounding can do better than one sample). The hypothesis property
test in tests/data/test_mix.py checks this bound at every prefix over random availabilities and shares.

When the category with the largest deficit has nothing left, selection *stops* there instead of drifting towards
the categories that still have samples; the result reports the shortfall: how many more samples of each category
the requested size (or, with no size, the most plentiful category) would have needed.

Within a category, samples are taken in input order, so the same input always yields the same output.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

from incasa.data.categories import CATEGORIES

DEFAULT_SHARES = {"photo": 0.4, "render": 0.3, "painting": 0.2, "technical": 0.1}


def parse_shares(text: str) -> dict[str, float]:
    """"photo=40,render=30,painting=20,technical=10" -> shares summing to 1 (percentages or fractions)."""
    shares: dict[str, float] = {}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, sep, value = part.partition("=")
        if not sep or name.strip() not in CATEGORIES:
            raise ValueError(f"{part!r}: expected CATEGORY=SHARE with CATEGORY in {CATEGORIES}")
        try:
            shares[name.strip()] = float(value)
        except ValueError:
            raise ValueError(f"{part!r}: share must be a number") from None
    return normalise_shares(shares)


def normalise_shares(shares: dict[str, float]) -> dict[str, float]:
    if any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
        raise ValueError(f"shares must be non-negative with a positive sum, got {shares}")
    total = sum(shares.values())
    return {c: shares[c] / total for c in CATEGORIES if shares.get(c, 0) > 0}


@dataclass(frozen=True)
class MixResult:
    """Selected candidate indices in output order, counts per category and what was missing."""

    order: list[int]
    counts: dict[str, int]
    available: dict[str, int]
    shortfall: dict[str, int] = field(default_factory=dict)
    stopped_by: str | None = None  # the category that ran out, if selection stopped early


def mix(categories: list[str], shares: dict[str, float], size: int | None = None) -> MixResult:
    """Choose from candidates whose categories are ``categories`` (index = candidate number)."""
    if size is not None and size < 0:
        raise ValueError("size must be >= 0")
    shares = normalise_shares(shares)
    pools: dict[str, list[int]] = {c: [] for c in shares}
    for i, c in enumerate(categories):
        if c in pools:
            pools[c].append(i)
    available = {c: len(p) for c, p in pools.items()}
    taken = {c: 0 for c in shares}
    order: list[int] = []
    stopped_by = None
    while size is None or len(order) < size:
        n = len(order) + 1
        # ties go to the category listed first in CATEGORIES (dict order), which keeps the result deterministic
        c = max(shares, key=lambda k: shares[k] * n - taken[k])
        if taken[c] == available[c]:
            stopped_by = c
            break
        order.append(pools[c][taken[c]])
        taken[c] += 1
    if size is not None:
        target = size
    else:  # what the most plentiful category could have supported
        target = max(math.floor(available[c] / s) for c, s in shares.items())
    shortfall = {c: need - available[c] for c, s in shares.items()
                 if (need := math.ceil(s * target - 1e-9)) > available[c]} if stopped_by else {}
    return MixResult(order, taken, available, shortfall, stopped_by)
