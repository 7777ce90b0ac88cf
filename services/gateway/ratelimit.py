"""Rate limits, pure: token buckets per process (`take` answers None or the seconds to wait),
and the sign-in lockout's decisions over failure counters the gateway store shares.

Bucket keys are source addresses or credential ids. The table is bounded: the least recently
refilled buckets are dropped first, which only ever forgives, never blocks, a caller.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from .accounts import rules
from .settings import GatewaySettings


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
            wait = self._wait(tokens)
        while len(self._buckets) > self._max_keys:
            self._buckets.popitem(last=False)
        return wait

    def peek(self, key: str, now: float) -> int | None:
        """What `take` would answer, without taking: None, or the seconds until one token is back."""
        tokens, at = self._buckets.get(key, (self._burst, now))
        tokens = min(self._burst, tokens + (now - at) * self._rate)
        return None if tokens >= 1.0 else self._wait(tokens)

    def _wait(self, tokens: float) -> int:
        return max(1, math.ceil((1.0 - tokens) / self._rate))


@dataclass(frozen=True)
class Throttles:
    """The gateway's token buckets outside sign-in: failed authentications per source address
    (every route), agent calls per source address and per device. Sized by `GatewaySettings`."""

    auth_failures: RateLimiter
    agent_by_address: RateLimiter
    agent_by_device: RateLimiter

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> Throttles:
        return cls(
            auth_failures=RateLimiter(burst=s.auth_failure_burst, per_second=s.auth_failure_per_second),
            agent_by_address=RateLimiter(burst=s.agent_rate_burst_per_address,
                                         per_second=s.agent_rate_per_second_per_address),
            agent_by_device=RateLimiter(burst=s.agent_rate_burst_per_device,
                                        per_second=s.agent_rate_per_second_per_device),
        )


# The source of the per-username counter that adds up failures from every address.
ALL_SOURCES = "*"


@dataclass(frozen=True)
class SignInLimits:
    """Failed sign-ins are counted twice, each count in a window that starts at its first failure:
    per (username, source address), locking that pair with backoff at `threshold`; and per
    username (`ALL_SOURCES`), locking the name everywhere at `global_threshold` until the window
    ends. The first keeps one address from locking out a user who signs in from another; the
    second bounds guessing from many addresses to `global_threshold` tries per name per window."""

    threshold: int
    global_threshold: int
    window: timedelta

    @classmethod
    def from_settings(cls, s: GatewaySettings) -> SignInLimits:
        return cls(threshold=s.lockout_threshold, global_threshold=s.lockout_global_threshold,
                   window=timedelta(seconds=s.lockout_window_seconds))

    def lock_after(self, counter: dict[str, Any], now: datetime) -> datetime | None:
        """Until when a counter that just counted a failure locks its sign-ins, or None."""
        if counter["source"] == ALL_SOURCES:
            return counter["expires_at"] if counter["failures"] >= self.global_threshold else None
        return rules.locked_until(counter["failures"], now, threshold=self.threshold)


def retry_after(counters: Iterable[dict[str, Any]], now: datetime) -> int | None:
    """Seconds until the last lock among these counters ends, or None when none holds now."""
    until = max((c["locked_until"] for c in counters if c.get("locked_until") and c["locked_until"] > now), default=None)
    return None if until is None else int((until - now).total_seconds()) + 1
