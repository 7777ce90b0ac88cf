"""The operator's server-sent event stream: tenant-scoped, filtered by type, fed from the
gateway's own queue."""

from __future__ import annotations

import asyncio
import json

import pytest

from services.gateway.notifications import NOTIFIER

from .helpers import EU_FACTS, BareAgent, make_tenant
from .test_approvals import approval_policy, ask


async def read_events(response, count: int, timeout: float = 10.0) -> list[tuple[str, dict]]:
    """The next `count` events of an SSE stream as (type, data)."""
    found: list[tuple[str, dict]] = []
    kind = None

    async def reader():
        nonlocal kind
        async for raw in response.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                found.append((kind, json.loads(line[6:])))
                if len(found) == count:
                    return

    await asyncio.wait_for(reader(), timeout)
    return found


async def test_operators_watch_approvals_and_denials_of_their_tenant_only(api, http):
    tenant = await make_tenant(api, policy=approval_policy())
    other = await make_tenant(api, name="globex", policy=approval_policy())
    agent = await BareAgent.enroll(tenant, api)
    stranger = await BareAgent.enroll(other, api)
    watcher = await tenant.team.for_role("auditor")  # reads approvals and decisions (a tenant admin does not)
    headers = {"Authorization": f"Bearer {watcher.token}"}
    url = f"{api.url}/v1/events/stream?types=approval.*,key.decided"
    async with http.get(url, headers=headers) as stream:
        assert stream.status == 200 and stream.headers["Content-Type"].startswith("text/event-stream")
        assert (await stream.content.readline()).startswith(b": stream open")
        assert (await ask(stranger, other.key_id))[0] == 202  # another tenant's: never shown here
        status, pending, _ = await ask(agent, tenant.key_id)
        assert status == 202
        seen = await read_events(stream, 2)
        assert sorted(kind for kind, _ in seen) == ["approval.requested", "key.decided"]
        assert all(data["tenant_id"] == tenant.tenant_id for _, data in seen)
        requested = next(data for kind, data in seen if kind == "approval.requested")
        assert requested["approval_id"] == pending["approval_id"] and requested["approvals_required"] == 1

        status, _, _ = await tenant.admin.call("POST", f"/v1/approvals/{pending['approval_id']}/deny", json={"comment": "no"})
        assert status == 200
        seen = await read_events(stream, 2)
        assert sorted(kind for kind, _ in seen) == ["approval.denied", "key.decided"]
        assert next(d for k, d in seen if k == "key.decided")["effect"] == "deny"

    status, problem, _ = await tenant.admin.call("GET", "/v1/events/stream?types=approval.*;drop")
    assert status == 400 and problem["field"] == "types"
    status, _, _ = await api.as_(None).call("GET", "/v1/events/stream")
    assert status == 401


async def test_a_webhook_forwarder_filtered_to_approvals_receives_them_signed(api):
    from aiohttp import web

    from services.auditsvc.forwarding import SIGNATURE_HEADER, TIMESTAMP_HEADER, verify_webhook_signature

    from .test_approvals import approvers
    from .test_audit_forwarders import _caught_up

    received: list[dict] = []
    secret: dict[str, str] = {}

    async def hook(request: web.Request) -> web.Response:
        body = await request.read()
        if not verify_webhook_signature(secret["value"], request.headers[TIMESTAMP_HEADER], body,
                                        request.headers[SIGNATURE_HEADER]):
            return web.Response(status=401)
        received.append(json.loads(body))
        return web.Response(status=204)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    try:
        tenant = await make_tenant(api, policy=approval_policy())
        status, fwd, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "approvals", "kind": "webhook", "url": f"http://127.0.0.1:{runner.addresses[0][1]}/hook",
            "format": "jsonl", "event_types": ["approval.*"]})
        assert status == 201, fwd
        secret["value"] = fwd["secret"]
        agent = await BareAgent.enroll(tenant, api)
        (alice,) = await approvers(tenant, 1)
        status, pending, _ = await ask(agent, tenant.key_id)
        assert status == 202
        status, _, _ = await alice.call("POST", f"/v1/approvals/{pending['approval_id']}/approve", json={"comment": "ok"})
        assert status == 200
        # Wait for the records themselves: the forwarder may be caught up with a head that does
        # not yet hold approval.granted.
        deadline = asyncio.get_running_loop().time() + 20
        while len([r for batch in received for r in batch["records"]]) < 2:
            assert asyncio.get_running_loop().time() < deadline, received
            await asyncio.sleep(0.05)
        await _caught_up(tenant.admin, fwd["forwarder_id"])
        records = [r for batch in received for r in batch["records"]]
        assert [r["api"]["operation"] for r in records] == ["approval.requested", "approval.granted"]
        assert all(pending["approval_id"] in r["message"] for r in records), records
    finally:
        await runner.cleanup()


async def test_a_stream_reopened_with_last_event_id_gets_what_it_missed(api, http):
    tenant = await make_tenant(api, policy=approval_policy())
    agent = await BareAgent.enroll(tenant, api)
    watcher = await tenant.team.for_role("auditor")  # reads approvals and decisions (a tenant admin does not)
    headers = {"Authorization": f"Bearer {watcher.token}"}
    url = f"{api.url}/v1/events/stream?types=approval.*,key.decided"
    async with http.get(url, headers=headers) as observer:  # stays open: shows when the gateway has them
        assert (await observer.content.readline()).startswith(b": stream open")
        async with http.get(url, headers=headers) as stream:
            assert (await stream.content.readline()).startswith(b": stream open")
            status, pending, _ = await ask(agent, tenant.key_id)
            assert status == 202
            first = await read_events(stream, 2)
        await read_events(observer, 2)

        # While no stream of ours is open: the approval is denied.
        status, _, _ = await tenant.admin.call("POST", f"/v1/approvals/{pending['approval_id']}/deny", json={})
        assert status == 200
        missed = await read_events(observer, 2)
        assert sorted(kind for kind, _ in missed) == ["approval.denied", "key.decided"]

        last_seen = first[-1][1]["event_id"]
        async with http.get(url, headers={**headers, "Last-Event-ID": last_seen}) as reopened:
            assert reopened.status == 200
            replayed = await read_events(reopened, 2)
        assert [data["event_id"] for _, data in replayed] == [data["event_id"] for _, data in missed]

        # An id the gateway no longer keeps: told so, then given every event it still has.
        async with http.get(url + "&last_event_id=evt_long_gone", headers=headers) as stale:
            kinds = [kind for kind, _ in await read_events(stale, 5)]
        assert kinds[0] == "gap" and sorted(kinds[1:]) == sorted(["approval.requested", "approval.denied",
                                                                  "key.decided", "key.decided"])

    status, problem, ctype = await tenant.admin.call("GET", "/v1/events/stream", headers={"Last-Event-ID": "evt;" + "x" * 80})
    assert status == 400 and ctype.startswith("application/problem+json") and problem["field"] == "Last-Event-ID"


async def _until(stream, wanted: str) -> list[tuple[str, dict]]:
    """The stream's events up to and including the first of type `wanted`."""
    seen: list[tuple[str, dict]] = []
    while not seen or seen[-1][0] != wanted:
        seen += await read_events(stream, 1)
    return seen


@pytest.mark.stack(gateway={"stream_binding_linger_seconds": 0.2})
async def test_raw_requests_reach_the_gateway_only_while_a_stream_may_show_them(stack, api, http):
    """Each release publishes a raw key.requested; the gateway's notify queue is bound to it only
    while a stream here may show it (and a linger after), so with none open the broker delivers
    none to it. Seen from the API: the replay buffer, which keeps every event the queue delivers,
    holds none from that time."""
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    markers = [await BareAgent.enroll(tenant, api, name=f"marker-{i}") for i in range(2)]
    headers = {"Authorization": f"Bearer {(await tenant.team.for_role('auditor')).token}"}
    url = f"{api.url}/v1/events/stream?types=key.requested,device.revoked"
    on_demand = stack.runner.app[NOTIFIER].on_demand

    async def release_then_revoke(marker: BareAgent) -> None:
        """A release with no stream open, then a revocation: its device.revoked is behind the raw
        request in the gateway's queue, had that been bound (the request was confirmed first)."""
        status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
        assert status == 200, out
        status, out, _ = await tenant.admin.call("POST", f"/v1/devices/{marker.device_id}/revoke", json={"reason": "x"})
        assert status == 200, out

    await release_then_revoke(markers[0])
    async with http.get(url, headers={**headers, "Last-Event-ID": "evt_before"}) as stream:
        kept = await _until(stream, "device.revoked")
        assert [kind for kind, _ in kept] == ["gap", "device.revoked"]  # no raw request reached the gateway
        # This stream may show raw requests: they are bound now, and the next one comes live.
        status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
        assert status == 200, out
        (kind, live), = await read_events(stream, 1)
        assert (kind, live["request_id"]) == ("key.requested", out["request_id"])

    deadline = asyncio.get_running_loop().time() + 30
    while on_demand.bound():  # the linger after the last stream closed
        assert asyncio.get_running_loop().time() < deadline, "still bound"
        await asyncio.sleep(0.05)
    await release_then_revoke(markers[1])
    # Back after the binding lapsed: told some may be missing, given what was kept (the revocation,
    # not the raw request), and raw requests come live again.
    async with http.get(url, headers={**headers, "Last-Event-ID": live["event_id"]}) as stream:
        kept = await _until(stream, "device.revoked")
        assert [kind for kind, _ in kept] == ["gap", "device.revoked"]
        assert kept[1][1]["device_id"] == markers[1].device_id
        status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
        assert status == 200, out
        (kind, again), = await read_events(stream, 1)
        assert (kind, again["request_id"]) == ("key.requested", out["request_id"])
