"""Token-bucket rate limits, pure and per process: `take` answers None or the seconds to wait.

Keys are source addresses or credential ids. The table is bounded: the least recently
refilled buckets are dropped first, which only ever forgives, never blocks, a caller.
"""

from __future__ import annotations

import math
from collections import OrderedDict


class RateLimiter:
    def __init__(self, *, burst: int, per_second: float, max_keys: int = 100_000):
        self._burst = float(burst)
        self._rate = per_second
        self._max_keys = max_keys
        self._buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # key -> (tokens, at)

    def take(self, key: str, now: float) -> int | None:
        tokens, at = self._buckets.pop(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = None
        else:
            self._buckets[key] = (tokens, now)
            wait = max(1, math.ceil((1.0 - tokens) / self._rate))
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait
