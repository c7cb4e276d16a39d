"""Throttles and counters that protect the server: token buckets and sliding-window counters."""

from __future__ import annotations

import time
from collections import deque


class TokenBucket:
    """``rate`` units per second, up to ``burst`` at once."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: float) -> None:
        self.rate = rate
        self.burst = burst
        self.tokens = burst
        self.stamp = time.monotonic()

    def take(self, n: float) -> float:
        """Take ``n``; returns 0 when allowed now, else the seconds to wait for the debt."""
        now = time.monotonic()
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        self.tokens -= n
        if self.tokens >= 0:
            return 0.0
        return -self.tokens / self.rate if self.rate > 0 else 0.0


class WindowCounter:
    """Counts events per key within a sliding window of ``window`` seconds."""

    def __init__(self, limit: int, window: float) -> None:
        self.limit = limit
        self.window = window
        self._events: dict[str, deque[float]] = {}

    def _prune(self, key: str, now: float) -> deque[float]:
        q = self._events.setdefault(key, deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def exceeded(self, key: str) -> bool:
        if self.limit <= 0:
            return False
        q = self._prune(key, time.monotonic())
        if not q:
            self._events.pop(key, None)
        return len(q) >= self.limit

    def hit(self, key: str) -> None:
        if self.limit <= 0:
            return
        self._prune(key, time.monotonic()).append(time.monotonic())
        if len(self._events) > 100_000:  # bound memory under address-spraying floods
            now = time.monotonic()
            for k in list(self._events)[:50_000]:
                if not self._prune(k, now):
                    del self._events[k]

    def clear(self, key: str) -> None:
        self._events.pop(key, None)
