"""`Idempotency-Key`: a client's retry of the same request gets the first answer instead of a second rendering.

The key is scoped by the caller's API key and the route; the request is fingerprinted (SHA-256 of its canonical
fields and file contents). Same key + same fingerprint: wait for the first request if it is still running, then
replay its answer. Same key + different fingerprint: 422 (a key names one request). Only successful answers are
kept (a 429 or 5xx must be retryable); entries expire after `ttl_s` and the oldest go beyond `max_entries`.
The cache lives in one process: behind a load balancer, route by the Idempotency-Key header (consistent
hashing) so that a retry reaches the replica that saw the first attempt.
"""

from __future__ import annotations

import asyncio
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from incasa.serve.protocol import APIError


@dataclass
class _Entry:
    fingerprint: str
    created: float
    done: asyncio.Event = field(default_factory=asyncio.Event)
    result: tuple[int, bytes, str] | None = None  # status, body, media type


class IdempotencyCache:
    def __init__(self, *, ttl_s: float = 3600.0, max_entries: int = 1024):
        self.ttl_s, self.max_entries = ttl_s, max_entries
        self._entries: OrderedDict[tuple, _Entry] = OrderedDict()
        self.replays = 0

    def _expire(self) -> None:
        now = time.monotonic()
        while self._entries:
            key, entry = next(iter(self._entries.items()))
            if now - entry.created <= self.ttl_s and len(self._entries) <= self.max_entries:
                break
            if not entry.done.is_set() and len(self._entries) <= self.max_entries:
                break  # never evict an entry whose first request is still running, unless over capacity
            self._entries.popitem(last=False)

    async def run(self, key: tuple, fingerprint: str,
                  compute: Callable[[], Awaitable[tuple[int, bytes, str]]]) -> tuple[int, bytes, str]:
        """Run `compute` once per (key, fingerprint); concurrent and later duplicates get its result."""
        self._expire()
        entry = self._entries.get(key)
        if entry is not None:
            if entry.fingerprint != fingerprint:
                raise APIError(422, "This Idempotency-Key was already used with a different request; use a new key "
                                    "for a new request.", param="Idempotency-Key", code="idempotency_key_reused")
            await entry.done.wait()
            if entry.result is not None:
                self.replays += 1
                return entry.result
            return await self.run(key, fingerprint, compute)  # the first attempt failed: this one may run
        entry = self._entries[key] = _Entry(fingerprint, time.monotonic())
        try:
            result = await compute()
        except BaseException:
            del self._entries[key]
            entry.done.set()
            raise
        if 200 <= result[0] < 300:
            entry.result = result
        else:
            del self._entries[key]
        entry.done.set()
        return result
