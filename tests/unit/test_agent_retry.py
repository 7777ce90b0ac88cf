"""The agent SDK retries a key request the gateway refused for now (503, 429): never sooner than
Retry-After, with jitter on top, a bounded number of times; other refusals are not retried."""

from __future__ import annotations

import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from agent.client import AgentClient, KeyNotFound, ServiceUnavailable, TooManyRequests
from agent.identity import AgentIdentity, generate_device_key
from agent.retry import MAX_RETRY_WAIT_SECONDS, retry_delay


def test_the_wait_grows_with_jitter_and_never_undercuts_retry_after():
    assert retry_delay(1, None, rand=lambda: 0.0) == 0.25  # half the first backoff (0.5 s)
    assert retry_delay(1, None, rand=lambda: 1.0) == 0.5 * 1.25  # the whole of it, and a quarter on top
    assert retry_delay(4, None, rand=lambda: 0.0) == 2.0
    assert retry_delay(1, 7.0, rand=lambda: 0.0) == 7.0  # Retry-After is the floor
    assert retry_delay(1, 7.0, rand=lambda: 1.0) == 7.0 * 1.25  # a herd told 7 s spreads over 7-8.75 s
    assert retry_delay(30, None, rand=lambda: 1.0) == MAX_RETRY_WAIT_SECONDS  # capped
    assert retry_delay(1, MAX_RETRY_WAIT_SECONDS + 1) is None  # asked to wait longer than allowed: no retry


async def _gateway(answers):
    """A gateway answering key requests from `answers` (status, Retry-After), recording each attempt."""
    seen: list[dict] = []

    async def key_requests(request: web.Request) -> web.Response:
        seen.append({"signature": request.headers.get("Signature"), "body": await request.read()})
        status, retry = answers[min(len(seen), len(answers)) - 1]
        headers = {"Retry-After": retry} if retry is not None else {}
        return web.json_response({"type": "about:blank", "title": "not now", "status": status}, status=status,
                                 headers=headers, content_type="application/problem+json")

    app = web.Application()
    app.router.add_post("/v1/agent/key-requests", key_requests)
    server = TestServer(app)
    await server.start_server()
    identity = AgentIdentity(gateway_url=str(server.make_url("")).rstrip("/"), tenant_id="t1", device_id="d1",
                             key_id="t1/d1", private_key=generate_device_key())
    return server, identity, seen


async def test_503_and_429_are_retried_each_attempt_signed_afresh_until_another_answer():
    server, identity, seen = await _gateway([(503, "0"), (429, "0"), (404, None)])
    try:
        async with AgentClient(identity, retries=3) as client:
            with pytest.raises(KeyNotFound):
                await client.request_key("t1/key", facts={})
    finally:
        await server.close()
    assert len(seen) == 3  # the 404 ended it: not a refusal "for now"
    assert len({s["signature"] for s in seen}) == 3 and len({s["body"] for s in seen}) == 3  # fresh one-time keys


async def test_retries_are_bounded_and_the_last_refusal_is_raised():
    server, identity, seen = await _gateway([(503, "0")])
    try:
        async with AgentClient(identity, retries=2) as client:
            with pytest.raises(ServiceUnavailable) as refused:
                await client.request_key("t1/key", facts={})
    finally:
        await server.close()
    assert len(seen) == 3 and refused.value.status == 503


async def test_a_retry_after_longer_than_the_cap_is_not_waited_for():
    server, identity, seen = await _gateway([(429, "3600")])
    try:
        async with AgentClient(identity, retries=5, max_retry_wait_seconds=30) as client:
            with pytest.raises(TooManyRequests) as refused:
                await client.request_key("t1/key", facts={})
    finally:
        await server.close()
    assert len(seen) == 1 and refused.value.retry_after == 3600
