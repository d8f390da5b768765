"""Rate limiter windows and token hashing."""

import pytest

from incasa.arena import guard


def test_sliding_window():
    limiter = guard.RateLimiter(limit=2, window_s=10.0)
    assert [limiter.allow("v", now=t) for t in (0.0, 1.0, 2.0, 9.9)] == [True, True, False, False]
    assert limiter.allow("v", now=10.5)  # the event at t=0 has left the window
    assert not limiter.allow("v", now=10.6)
    assert limiter.allow("other", now=10.6)  # keys are independent
    with pytest.raises(ValueError):
        guard.RateLimiter(limit=0)


def test_idle_keys_are_forgotten():
    limiter = guard.RateLimiter(limit=1, window_s=1.0)
    for k in range(10_000):
        limiter.allow(f"voter-{k}", now=float(k))
    assert len(limiter._events) < 10


def test_tokens_and_addresses_are_hashed():
    token = guard.new_token()
    assert len(token) >= 32 and guard.token_hash(token) != token and len(guard.token_hash(token)) == 64
    assert guard.ip_hash("127.0.0.1", "a") != guard.ip_hash("127.0.0.1", "b")
