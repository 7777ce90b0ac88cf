"""`strongroom-agent run`'s loop: the interval it keeps, how it backs off and honours Retry-After,
and how it stops; the client reading Retry-After from a real HTTP answer."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.client import AgentClient, ServiceUnavailable, TooManyRequests
from agent.facts import FactsError
from agent.identity import AgentIdentity, generate_device_key
from agent.service import Beat, backoff_delay, facts_digest, interval_from, run_service


def test_the_interval_is_the_operators_then_the_gateways_then_the_default():
    assert interval_from({"heartbeat_interval_seconds": 450, "next_heartbeat_within_seconds": 900}) == 450
    assert interval_from({"heartbeat_interval_seconds": 450}, override=5.0) == 5.0
    assert interval_from({"next_heartbeat_within_seconds": 900}) == 450  # an older gateway
    assert interval_from({"heartbeat_interval_seconds": 0.2}) == 1.0
    assert interval_from({"heartbeat_interval_seconds": True}) == interval_from({}) == 60.0


def test_backoff_doubles_with_jitter_stays_under_the_interval_and_honours_retry_after():
    assert [backoff_delay(n, interval=450, rand=lambda: 0.0) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 4.0]
    assert [backoff_delay(n, interval=450, rand=lambda: 1.0) for n in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 8.0]
    assert backoff_delay(30, interval=450, rand=lambda: 1.0) == 300.0
    assert backoff_delay(30, interval=10, rand=lambda: 1.0) == 10.0  # never a missed grace period for backoff
    assert backoff_delay(1, interval=450, retry_after=7, rand=lambda: 1.0) == 7.0
    assert backoff_delay(9, interval=450, retry_after=7, rand=lambda: 1.0) == 256.0


def test_the_facts_digest_ignores_key_order():
    assert facts_digest({"a": 1, "b": {"c": 2}}) == facts_digest({"b": {"c": 2}, "a": 1}) != facts_digest({"a": 2})


async def test_failures_back_off_then_beats_resume_and_a_stop_ends_the_loop():
    outcomes: list[object] = [
        ServiceUnavailable(503, "Service Unavailable", retry_after=0.7),
        FactsError("facts file /etc/f.json is not valid JSON"),
        {"device_id": "d1", "status": "active", "heartbeat_interval_seconds": 450},
        {"device_id": "d1", "status": "quarantined", "heartbeat_interval_seconds": 450},
    ]
    stop = asyncio.Event()
    lines: list[dict] = []

    async def beat() -> Beat:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return Beat(answer=outcome, facts={"integrity": {"firewall": {"ruleset_sha256": "ab"}}})

    def emit(line: dict) -> None:
        lines.append(line)
        if len(lines) == 4:
            stop.set()

    delivered = await run_service(beat, stop=stop, emit=emit, interval=0.01, rand=lambda: 0.0)
    assert delivered == 2 and outcomes == []
    assert [line["event"] for line in lines] == ["heartbeat_failed", "heartbeat_failed", "heartbeat_sent",
                                                 "heartbeat_sent"]
    assert lines[0]["retry_in_seconds"] == 0.7 and lines[0]["http_status"] == 503 and lines[0]["failures"] == 1
    assert lines[1]["failures"] == 2 and lines[1]["retry_in_seconds"] == 0.5 and "not valid JSON" in lines[1]["error"]
    assert [line["status"] for line in lines[2:]] == ["active", "quarantined"]
    assert lines[2]["next_in_seconds"] == 0.01 and lines[2]["firewall_ruleset_sha256"] == "ab"


async def test_a_stop_cancels_a_heartbeat_in_flight():
    stop, started, cancelled = asyncio.Event(), asyncio.Event(), asyncio.Event()

    async def beat() -> Beat:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    service = asyncio.create_task(run_service(beat, stop=stop, emit=lambda line: None))
    await started.wait()
    stop.set()
    assert await service == 0 and cancelled.is_set()

    # Cancelling the loop itself (its caller going away) does not leave the heartbeat running either.
    started.clear()
    cancelled.clear()
    service = asyncio.create_task(run_service(beat, stop=asyncio.Event(), emit=lambda line: None))
    await started.wait()
    service.cancel()
    with pytest.raises(asyncio.CancelledError):
        await service
    assert cancelled.is_set()


async def test_unexpected_errors_are_not_swallowed():
    async def beat() -> Beat:
        raise KeyError("bug")

    with pytest.raises(KeyError):
        await run_service(beat, stop=asyncio.Event(), emit=lambda line: None)


async def test_the_client_reads_retry_after_from_429_and_503(tmp_path):
    answers = iter([(429, "7"), (503, "Thu, 01 Jan 1970 00:00:00 GMT")])

    async def heartbeat(request: web.Request) -> web.Response:
        status, retry = next(answers)
        return web.json_response({"type": "about:blank", "title": "slow down", "status": status}, status=status,
                                 headers={"Retry-After": retry}, content_type="application/problem+json")

    app = web.Application()
    app.router.add_post("/v1/agent/heartbeat", heartbeat)
    async with TestServer(app) as server:
        identity = AgentIdentity(gateway_url=str(server.make_url("")).rstrip("/"), tenant_id="t1", device_id="d1",
                                 key_id="t1/d1", private_key=generate_device_key())
        async with AgentClient(identity) as client:
            with pytest.raises(TooManyRequests) as throttled:
                await client.heartbeat({})
            assert throttled.value.retry_after == 7.0 and throttled.value.status == 429
            assert "\x00" not in "".join(throttled.value.problem)  # the header is not part of the problem
            with pytest.raises(ServiceUnavailable) as unavailable:
                await client.heartbeat({})
            assert unavailable.value.retry_after == 0.0  # a date in the past: retry now
