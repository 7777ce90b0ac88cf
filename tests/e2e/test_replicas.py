"""Two replicas of every service, each its own `strongroom serve` process, as competing consumers;
then one replica of each killed with SIGKILL in the middle of the load.

Agents ask for keys through both gateways, approvals are voted through one gateway while the agent
waits on the other, a key and the tenant KEK are rotated, and a webhook forwarder carries the audit
log out. After the kill, every release has either completed or been cleanly refused, every audit
record is in its chain exactly once, every chain verifies, and the forwarder delivered everything.
"""

from __future__ import annotations

import asyncio
import base64
import json
from collections import Counter
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from shared.audit_chain import ChainHead, verify_chain
from shared.crypto import httpsig, release
from shared.signatures import load_public_pem

from .cluster import Cluster
from .conftest import Api
from .helpers import EU_FACTS, BareAgent, audit_records_until, make_tenant
from .test_approvals import approval_policy, approvers

_PROBLEM = "application/problem+json"


@dataclass
class Load:
    """What the agents saw: outcomes per request, the released keys, and when each release completed."""

    released: dict[str, tuple[str, int, bytes]] = field(default_factory=dict)  # request id -> key id, version, key
    refused: list[tuple[int, str | None]] = field(default_factory=list)  # (status, request id)
    interrupted: list[str] = field(default_factory=list)  # the gateway went away mid-request
    wrong: list[tuple[int, object]] = field(default_factory=list)
    took: list[tuple[float, float]] = field(default_factory=list)  # (answered at, seconds) per release request
    approved: list[str] = field(default_factory=list)
    stop: asyncio.Event = field(default_factory=asyncio.Event)

    def record(self, status: int, out: dict, ctype: str, key: bytes | None = None) -> None:
        if status == 200 and key is not None:
            self.released[out["request_id"]] = (out["key_id"], out["key_version"], key)
        elif status in (503, 504) and ctype.startswith(_PROBLEM):
            self.refused.append((status, out.get("request_id")))
        else:
            self.wrong.append((status, out))

    def longest_stall(self, since: float) -> float:
        """The longest any agent waited for an answer that came after `since` (the kill)."""
        return max((seconds for at, seconds in self.took if at >= since), default=0.0)


def _through(agent: BareAgent, api: Api) -> BareAgent:
    """The same device, talking to another gateway."""
    return BareAgent(api, agent.signing_key, agent.key_id, agent.tenant_id)


def _open(agent: BareAgent, out: dict, ephemeral) -> bytes:
    return release.open_sealed(base64.b64decode(out["sealed_key"]), ephemeral, release.release_info(
        tenant_id=agent.tenant_id, request_id=out["request_id"], key_id=out["key_id"], key_version=out["key_version"]))


def _lost(views: list[BareAgent], agent: BareAgent, exc: Exception, load: Load) -> None:
    """A request that got no answer: the gateway went away (refused: it is gone, use the other)."""
    load.interrupted.append(type(exc).__name__)
    if isinstance(exc, aiohttp.ClientConnectorError):
        views.remove(agent)


async def _releases(views: list[BareAgent], key_id: str, load: Load) -> None:
    """An agent asking again and again, alternating gateways; a gateway that went away is skipped."""
    turn = 0
    while not load.stop.is_set():
        agent = views[turn % len(views)]
        turn += 1
        body, ephemeral = agent.request_body(key_id, EU_FACTS)
        asked = asyncio.get_running_loop().time()
        try:
            status, out, ctype = await agent.api.call("POST", "/v1/agent/key-requests", data=body,
                                                      headers=agent.signed(body))
        except aiohttp.ClientError as exc:
            _lost(views, agent, exc, load)
            continue
        answered = asyncio.get_running_loop().time()
        load.took.append((answered, answered - asked))
        load.record(status, out, ctype, _open(agent, out, ephemeral) if status == 200 else None)


async def _poll(agent: BareAgent, request_id: str, wait: float):
    path = f"/v1/agent/key-requests/{request_id}?wait={wait:g}"
    headers = httpsig.sign_request(method="GET", url=agent.api.url + path, headers={}, body=b"",
                                   key_id=agent.key_id, private_key=agent.signing_key)
    return await agent.api.call("GET", path, headers=headers)


async def _approvals(views: list[BareAgent], key_id: str, approver: Api, load: Load) -> None:
    """A request through one gateway, approved through the other while the agent waits on the first:
    the outcome must reach the gateway the agent waits on (or, if that one dies, the other)."""
    while not load.stop.is_set():
        agent = views[0]
        body, ephemeral = agent.request_body(key_id, EU_FACTS)
        try:
            status, pending, ctype = await agent.api.call("POST", "/v1/agent/key-requests", data=body,
                                                          headers=agent.signed(body))
        except aiohttp.ClientError as exc:
            _lost(views, agent, exc, load)
            continue
        if status != 202:
            load.record(status, pending, ctype)
            continue
        waiting = asyncio.create_task(_poll(agent, pending["request_id"], 30))
        status, voted, _ = await approver.call("POST", f"/v1/approvals/{pending['approval_id']}/approve")
        assert status == 200, voted
        try:
            status, out, ctype = await waiting
        except aiohttp.ClientError as exc:  # the gateway it waited on died: ask the other one
            _lost(views, agent, exc, load)
            if agent in views:
                views.remove(agent)
            status, out, ctype = await _poll(views[0], pending["request_id"], 30)
        load.record(status, out, ctype, _open(agent, out, ephemeral) if status == 200 else None)
        if status == 200:
            load.approved.append(out["request_id"])


class Hook:
    """A webhook receiver: the audit records a forwarder delivered, by sequence number."""

    def __init__(self) -> None:
        self.seqs: Counter[int] = Counter()

    async def start(self) -> str:
        async def take(request: web.Request) -> web.Response:
            self.seqs.update(json.loads(await request.read())["seqs"])
            return web.Response(status=204)

        app = web.Application()
        app.router.add_post("/hook", take)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        return f"http://127.0.0.1:{self.runner.addresses[0][1]}/hook"


async def _until(check, timeout: float = 60.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not (result := await check()) and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.2)
    return result


def _by_request(records: list[dict], action: str) -> Counter[str]:
    return Counter(r["details"].get("request_id") for r in records if r["action"] == action)


async def _signed(admin) -> dict | None:
    """The tenant's checkpoints, once there is one."""
    status, page, _ = await admin.call("GET", "/v1/audit/checkpoints?limit=1000")
    assert status == 200, page
    return page if page["items"] else None


async def _chain_checked(admin, tenant_id: str, ready) -> list[dict]:
    """The tenant's records once `ready`: each seq once, each event once, the chain and checkpoints verified.

    A checkpoint is signed `CHECKPOINT_EVERY_SECONDS` after the appending replica's first unsigned
    record, and the interval starts again on the replica taking over from a killed one: a short run's
    records can be readable before any is signed. So wait for one (bounded), then for the records it
    signs (a checkpoint past the records read would read as a truncated chain)."""
    page = await _until(lambda: _signed(admin))
    assert page, "no checkpoint was signed"  # by whichever replica appended
    signed_to = max(cp["seq"] for cp in page["items"])
    records = await audit_records_until(admin, lambda rs: ready(rs) and len(rs) >= signed_to, timeout=60)
    assert ready(records) and len(records) >= signed_to
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1))
    assert len({r["event_id"] for r in records}) == len(records)
    status, keys, _ = await admin.call("GET", "/v1/audit/signing-key")
    assert status == 200, keys
    trusted = [load_public_pem(k["public_key_pem"]) for k in keys["keys"]]
    assert verify_chain(records, start=ChainHead.genesis(tenant_id), checkpoints=page["items"], trusted_keys=trusted).ok
    return records


async def _setup(api: Api, hook_url: str):
    alpha = await make_tenant(api, "alpha")
    beta = await make_tenant(api, "beta", policy=approval_policy())
    status, fwd, _ = await alpha.admin.call("POST", "/v1/audit/forwarders", json={
        "name": "siem", "kind": "webhook", "url": hook_url, "format": "jsonl"})
    assert status == 201, fwd
    agents = [await BareAgent.enroll(alpha, api, name=f"vm-{i}") for i in range(2)]
    waiter = await BareAgent.enroll(beta, api, name="vm-approved")
    (approver,) = await approvers(beta, 1)
    return alpha, beta, agents, waiter, approver


async def _rotated_everywhere(alpha, load: Load) -> None:
    """A rotation through one keysvc: releases answered by either keysvc learn the new version (each
    drops its cached copy on key.rotated)."""
    status, rotated, _ = await alpha.admin.call("POST", f"/v1/keys/{alpha.key_id}/rotate")
    assert status == 200 and rotated["latest_version"] == 2, rotated
    newest = len(load.released)

    async def learnt():
        later = [version for key_id, version, _ in list(load.released.values())[newest:] if key_id == alpha.key_id]
        return len(later) >= 6 and later[-6:] == [2] * 6

    assert await _until(learnt), list(load.released.values())[newest:]


async def _revoked_everywhere(alpha, api: Api, via_first: Api) -> str:
    """A person disabled and a device revoked through the second gateway are refused by the first,
    which had both cached."""
    person = await alpha.team.user("auditor")
    device = await BareAgent.enroll(alpha, api, name="vm-revoked")
    on_first = _through(device, via_first)
    assert (await via_first.as_(person.token).call("GET", "/v1/audit?limit=1"))[0] == 200
    assert (await on_first.request(alpha.key_id, EU_FACTS))[0] == 200
    status, out, _ = await alpha.team.admin.call("POST", f"/v1/users/{person.user_id}/disable")
    assert status == 200, out
    status, out, _ = await alpha.admin.call("POST", f"/v1/devices/{device.device_id}/revoke", json={"reason": "lost"})
    assert status == 200, out

    async def refused():
        return ((await via_first.as_(person.token).call("GET", "/v1/audit?limit=1"))[0] == 401
                and (await on_first.request(alpha.key_id, EU_FACTS))[0] == 401)

    assert await _until(refused)
    return device.device_id


async def _load_survives_the_kill(cluster: Cluster, alpha, load: Load) -> float:
    """Kill one replica of each service while releases flow, with a KEK rotation just started; the
    load goes on through the survivors. Returns when the kill happened."""
    async def released(n: int):
        return len(load.released) >= n

    status, started, _ = await alpha.admin.call("POST", "/v1/custody/kek/rotate")
    assert status == 202, started
    killed_at = asyncio.get_running_loop().time()
    for service in ("gateway", "policysvc", "keysvc", "auditsvc"):
        cluster.kill(cluster.of(service)[0])  # the first started: the active audit consumer, the lease holder
    target = len(load.released) + 10
    assert await _until(lambda: released(target)), load
    return killed_at


async def _nothing_lost(alpha, beta, load: Load, hook: Hook, aside: str) -> dict:
    alpha_ids = set(load.released) - set(load.approved)

    def settled(records: list[dict]) -> bool:
        released, requested = _by_request(records, "key.released"), _by_request(records, "key.requested")
        decided = Counter(r["details"].get("request_id") for r in records if r["action"].startswith("key.decided"))
        actions = Counter(r["action"] for r in records)
        return (all(released[rid] for rid in alpha_ids) and actions["kek.rotated"] and actions["key.rotated"]
                and all(decided.get(rid) for rid in requested))

    records = await _chain_checked(alpha.admin, alpha.tenant_id, settled)
    actions = Counter(r["action"] for r in records)
    assert actions["kek.rotated"] == 1 and actions["key.rotated"] == 1
    assert all(n == 1 for n in _by_request(records, "key.requested").values())
    assert all(n == 1 for n in _by_request(records, "key.released").values())
    decisions = Counter(r["details"].get("request_id") for r in records if r["action"].startswith("key.decided"))
    assert set(decisions) == set(_by_request(records, "key.requested")) and set(decisions.values()) == {1}

    approved = set(load.approved)
    beta_records = await _chain_checked(
        beta.admin, beta.tenant_id, lambda rs: approved <= set(_by_request(rs, "key.released")))
    assert all(n == 1 for n in _by_request(beta_records, "key.released").values())

    # Requests whose gateway died before it answered: each was still decided once (and, allowed,
    # released once); only the answer was lost with the gateway, and the agent asked again.
    answered = set(load.released) | {rid for _, rid in load.refused}
    asked = [r for r in records if r["details"].get("device_id") != aside]  # the revoked device asked outside the load
    unanswered = set(_by_request(asked, "key.requested")) - answered
    head = len(records)
    assert await _until(lambda: _covered(hook, head)), sorted(set(range(1, head + 1)) - set(hook.seqs))
    return {"alpha_records": head, "beta_records": len(beta_records),
            "forwarded_twice": sum(n > 1 for n in hook.seqs.values()),
            "decided_but_unanswered": len(unanswered)}


async def _covered(hook: Hook, head: int) -> bool:
    return set(range(1, head + 1)) <= set(hook.seqs)


async def test_two_replicas_of_each_service_share_the_work_and_lose_nothing_when_one_of_each_is_killed(
        tmp_path, amqp_url, mongo_url, prefix, db_prefix, mailbox, http):
    cluster = Cluster(tmp_path, amqp_url, mongo_url, f"{prefix}.", db_prefix, mailbox.port)
    hook = Hook()
    try:
        await cluster.start_all()
        first, second = cluster.of("gateway")
        api = Api(http, second.url, cluster.bootstrap, mailbox)  # operators use the gateway that survives
        via_first = Api(http, first.url, None, mailbox)
        alpha, beta, agents, waiter, approver = await _setup(api, await hook.start())
        load = Load()
        tasks = [asyncio.create_task(_releases([_through(a, via_first), _through(a, api)], alpha.key_id, load))
                 for a in agents]
        tasks.append(asyncio.create_task(
            _approvals([_through(waiter, via_first), _through(waiter, api)], beta.key_id, approver, load)))
        await _rotated_everywhere(alpha, load)
        revoked = await _revoked_everywhere(alpha, api, via_first)
        killed_at = await _load_survives_the_kill(cluster, alpha, load)
        load.stop.set()
        await asyncio.gather(*tasks)

        assert load.wrong == [], load.wrong  # every answer a release, a clean refusal, or a lost connection
        keys = {}
        for key_id, version, key in load.released.values():
            assert keys.setdefault((key_id, version), key) == key  # every replica released the same key per version
        assert load.approved, "no approval went through"
        figures = await _nothing_lost(alpha, beta, load, hook, revoked)
        print(f"\nreleased {len(load.released)} (approved {len(load.approved)}), refused {Counter(s for s, _ in load.refused)}, "
              f"interrupted by the kill {Counter(load.interrupted)}, longest wait for an answer after the kill "
              f"{load.longest_stall(killed_at):.2f} s, {figures}")
    except BaseException:
        print(cluster.logs())
        raise
    finally:
        await cluster.stop_all()
        if hasattr(hook, "runner"):
            await hook.runner.cleanup()
