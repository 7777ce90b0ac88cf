"""When the SDK asks again after the gateway said "not now" (503 or 429 with Retry-After).

Bounded: a few attempts, each wait capped, and a gateway that asks for longer than the cap gets
no retry (the caller decides). Waits grow exponentially with jitter and are never sooner than
the gateway's Retry-After, plus up to a quarter more so that many agents told the same
Retry-After in a storm do not all come back in the same instant.
"""

from __future__ import annotations

import random
from collections.abc import Callable

RETRY_STATUSES = frozenset({429, 503})
DEFAULT_RETRIES = 3
MAX_RETRY_WAIT_SECONDS = 30.0
BASE_SECONDS = 0.5


def retry_delay(attempt: int, retry_after: float | None, *, cap: float = MAX_RETRY_WAIT_SECONDS,
                rand: Callable[[], float] = random.random) -> float | None:
    """Seconds to wait before retry number `attempt` (from 1); None when Retry-After exceeds `cap`."""
    if retry_after is not None and retry_after > cap:
        return None
    backoff = min(cap, BASE_SECONDS * 2.0 ** max(0, attempt - 1))
    delay = max(retry_after or 0.0, backoff / 2 + rand() * backoff / 2)
    return min(cap, delay + rand() * delay / 4)
