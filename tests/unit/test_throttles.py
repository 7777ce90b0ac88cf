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


def _throttled(limiter: RateLimiter, key: str, times: list[float]) -> int:
    return sum(limiter.take(key, t) is not None for t in times)


def test_default_agent_budgets_fit_real_agents_and_stop_a_runaway_one():
    t = Throttles.from_settings(GatewaySettings())
    # A VM boots: keys for 40 volumes and a heartbeat at once, then a heartbeat every 30 s and
    # a key rotation's request now and then, for an hour: never throttled.
    boot = [0.0] * 41
    day = [30.0 * i for i in range(1, 120)] + [600.0, 1800.0, 1800.5]
    assert _throttled(t.agent_by_device, "ten/dev_a", sorted(boot + day)) == 0
    # A runaway agent asking ten times a second is throttled within its first minute.
    assert _throttled(t.agent_by_device, "ten/dev_b", [i / 10 for i in range(600)]) > 400
    # One address behind a NAT: 1,000 VMs booting together (two keys and a heartbeat each), then
    # 2,000 VMs heartbeating every 30 s (about 67 calls a second): never throttled.
    nat = [0.0] * 3_000 + [60.0 + i * 30.0 / 2_000 for i in range(20_000)]
    assert _throttled(t.agent_by_address, "ip:192.0.2.1", nat) == 0
    # The same address flooding at 1,000 calls a second is throttled.
    assert _throttled(t.agent_by_address, "ip:192.0.2.2", [i / 1_000 for i in range(10_000)]) > 5_000
