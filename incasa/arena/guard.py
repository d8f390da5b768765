"""Anti-abuse helpers for the web layer: sliding-window rate limits, voter tokens, and hashed client addresses.

Rate limits are kept in memory, per process: with several server replicas each enforces its own window, so the
effective limit is the per-replica limit times the number of replicas (say so when you configure them). Tokens are
random strings handed out by `incasa arena tokens issue`; the store keeps only their sha256, so a leaked database
does not leak tokens. Client addresses are kept only as a salted hash: enough to rate-limit and to audit, not to
identify.
"""

import hashlib
import secrets
import threading
import time
from collections import deque


class RateLimiter:
    """At most `limit` events per `window_s` seconds per key (a sliding window of timestamps)."""

    def __init__(self, limit: int, window_s: float = 60.0):
        if limit < 1 or window_s <= 0:
            raise ValueError("a rate limit needs limit >= 1 and window_s > 0")
        self.limit, self.window_s = limit, window_s
        self._events: dict[str, deque] = {}
        self._lock = threading.Lock()
        self._calls = 0

    def allow(self, key: str, now: float | None = None) -> bool:
        """Record an event for `key` and say whether it is within the limit (refused events are not recorded)."""
        now = time.monotonic() if now is None else now
        with self._lock:
            self._calls += 1
            if self._calls % 10_000 == 0:  # forget idle keys now and then, so memory follows active voters only
                self._events = {k: e for k, e in self._events.items() if e and e[-1] > now - self.window_s}
            events = self._events.setdefault(key, deque())
            while events and events[0] <= now - self.window_s:
                events.popleft()
            if len(events) >= self.limit:
                return False
            events.append(now)
            return True


def new_token() -> str:
    return secrets.token_urlsafe(24)


def token_hash(token: str) -> str:
    return hashlib.sha256(("incasa-arena-token\0" + token).encode()).hexdigest()


def ip_hash(address: str, salt: str) -> str:
    return hashlib.sha256(f"{salt}\0{address}".encode()).hexdigest()
