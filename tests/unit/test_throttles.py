"""The gateway's token buckets outside sign-in: a peek that takes nothing, and failed
authentications counted per source address."""

from __future__ import annotations

from services.gateway.ratelimit import RateLimiter, Throttles
from services.gateway.settings import GatewaySettings


def test_peek_answers_what_take_would_without_taking():
    limiter = RateLimiter(burst=2, per_second=0.5)
    assert limiter.peek("ip", 0.0) is None
    assert limiter.take("ip", 0.0) is None and limiter.take("ip", 0.0) is None
    assert limiter.peek("ip", 0.0) == 2 and limiter.peek("ip", 0.0) == 2
    assert limiter.peek("ip", 2.0) is None and limiter.peek("other", 0.0) is None
    assert limiter.take("ip", 2.0) is None and limiter.peek("ip", 2.0) == 2


def test_failed_authentications_are_counted_per_address():
    throttles = Throttles.from_settings(GatewaySettings(auth_failure_burst=3, auth_failure_per_second=0.2))
    for _ in range(3):
        assert throttles.auth_failures.take("ip:10.0.0.1", 0.0) is None
    assert throttles.auth_failures.peek("ip:10.0.0.1", 0.0) == 5
    assert throttles.auth_failures.peek("ip:10.0.0.2", 0.0) is None
