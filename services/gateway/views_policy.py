"""Gateway views of the policy area: versions, groups, approvals, decisions, dry-run, the event
stream, and the agent's poll and heartbeat. Most forward to policysvc by request/reply."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
from collections import OrderedDict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import structlog
from aiohttp import web
from pydantic import Field, field_validator

from shared import events
from shared.commands import Strict
from shared.rpc import ProblemError

from .problems import ExtraProblem
from .schemas import MAX_FACTS_BYTES
from .state import (
    CORRELATION_ID,
    GATEWAY,
    PRINCIPAL,
    _call,
    _gw,
    _json,
    _now,
    _principal,
    body_as,
)
from .views_agents import _release_response

log = structlog.get_logger("strongroom.gateway")

# --- bodies --------------------------------------------------------------------------------


class GroupBody(Strict):
    """A device group (static members and/or a `match` condition over facts) or a key group (members)."""

    name: str = Field(min_length=1, max_length=128)
    kind: Literal["device", "key"]
    description: str = Field(default="", max_length=1024)
    members: list[str] = Field(default_factory=list, max_length=10_000)
    match: dict[str, Any] | None = None


class VoteBody(Strict):
    comment: str = Field(default="", max_length=1000)


class SimulateBody(Strict):
    """A candidate policy (replacing `policy_id` if given) replayed over requests or recorded traffic."""

    policy: dict[str, Any]
    policy_id: str | None = Field(default=None, max_length=100)
    requests: list[dict[str, Any]] | None = Field(default=None, max_length=5000)
    recorded_days: int | None = Field(default=None, ge=1, le=90)


class PolicySettingsBody(Strict):
    approval_expiry_seconds: int = Field(default=3600, ge=1, le=30 * 86400)
    heartbeat_grace_seconds: int = Field(default=900, ge=1, le=30 * 86400)


class ClearQuarantineBody(Strict):
    reason: str = Field(min_length=1, max_length=500)


class HeartbeatBody(Strict):
    facts: dict[str, Any] = Field(default_factory=dict)

    @field_validator("facts")
    @classmethod
    def _bounded(cls, facts: dict[str, Any]) -> dict[str, Any]:
        if len(json.dumps(facts)) > MAX_FACTS_BYTES:
            raise ValueError(f"facts must be at most {MAX_FACTS_BYTES} bytes of JSON")
        return facts


# --- policy versions -------------------------------------------------------------------------


def _version(request: web.Request) -> int:
    text = request.match_info["version"]
    if not text.isdigit() or not 1 <= int(text) <= 10**9:
        raise ProblemError(400, "Bad Request", "version must be a positive integer", "version")
    return int(text)


async def list_policy_versions(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "list_policy_versions", {"policy_id": request.match_info["policy_id"]}))


async def get_policy_version(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_policy_version",
                             {"policy_id": request.match_info["policy_id"], "version": _version(request)}))


async def restore_policy_version(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "restore_policy_version",
                             {"policy_id": request.match_info["policy_id"], "version": _version(request)}))


async def simulate_policy(request: web.Request) -> web.Response:
    body = await body_as(request, SimulateBody)
    if (body.requests is None) == (body.recorded_days is None):
        raise ProblemError(422, "Unprocessable Content", "give exactly one of requests or recorded_days", "requests")
    return _json(await _call(request, "policysvc", "simulate", body.model_dump(exclude_none=True)))


async def get_policy_settings(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_settings"))


async def put_policy_settings(request: web.Request) -> web.Response:
    body = await body_as(request, PolicySettingsBody)
    return _json(await _call(request, "policysvc", "put_settings", body.model_dump()))


# --- groups ------------------------------------------------------------------------------------


async def create_group(request: web.Request) -> web.Response:
    body = await body_as(request, GroupBody)
    return _json(await _call(request, "policysvc", "put_group", {"group": body.model_dump(exclude_none=True)}), 201)


async def update_group(request: web.Request) -> web.Response:
    body = await body_as(request, GroupBody)
    return _json(await _call(request, "policysvc", "put_group",
                             {"group_id": request.match_info["group_id"], "group": body.model_dump(exclude_none=True)}))


async def list_groups(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "list_groups", {"kind": request.query.get("kind")}))


async def get_group(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_group", {"group_id": request.match_info["group_id"]}))


async def delete_group(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "delete_group", {"group_id": request.match_info["group_id"]}))


# --- approvals and decisions -------------------------------------------------------------------


async def list_approvals(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "list_approvals",
                             {"status": request.query.get("status"), "limit": request.query.get("limit")}))


async def get_approval(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_approval", {"approval_id": request.match_info["approval_id"]}))


async def _vote(request: web.Request, verdict: str) -> web.Response:
    body = await body_as(request, VoteBody) if request.can_read_body else VoteBody()
    return _json(await _call(request, "policysvc", "vote",
                             {"approval_id": request.match_info["approval_id"], "verdict": verdict, "comment": body.comment}))


async def approve(request: web.Request) -> web.Response:
    return await _vote(request, "approve")


async def deny(request: web.Request) -> web.Response:
    return await _vote(request, "deny")


async def list_decisions(request: web.Request) -> web.Response:
    query = {k: request.query.get(k) for k in ("device_id", "key_id", "effect", "limit")}
    return _json(await _call(request, "policysvc", "list_decisions", query))


async def get_decision(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_decision", {"request_id": request.match_info["request_id"]}))


# --- device posture --------------------------------------------------------------------------


async def get_device_posture(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_posture", {"device_id": request.match_info["device_id"]}))


async def clear_quarantine(request: web.Request) -> web.Response:
    body = await body_as(request, ClearQuarantineBody)
    return _json(await _call(request, "policysvc", "clear_quarantine",
                             {"device_id": request.match_info["device_id"], "reason": body.reason}))


# --- agents: poll a request, heartbeat -----------------------------------------------------------

MAX_WAIT_SECONDS = 60.0


async def key_request_status(request: web.Request) -> web.Response:
    """Agent: the state of its own key request; `?wait=N` long-polls up to N seconds for an outcome."""
    gw = _gw(request)
    request_id = request.match_info["request_id"]
    try:
        wait = min(float(request.query.get("wait", "0")), MAX_WAIT_SECONDS)
    except ValueError:
        raise ProblemError(400, "Bad Request", "wait must be a number of seconds", "wait") from None
    loop = asyncio.get_running_loop()
    deadline = loop.time() + wait
    try:
        while True:
            # The waiter is registered before each look, so an outcome in between is not missed; an
            # event that settles nothing (a re-published pending decision) just starts another wait.
            waiter = gw.waiters.expect(request_id) if wait > 0 else None
            final, pending = await _request_state(request, request_id)
            left = deadline - loop.time()
            if final is not None or waiter is None or left <= 0:
                break
            try:
                await asyncio.wait_for(waiter, left)
            except TimeoutError:
                final, pending = await _request_state(request, request_id)
                break
    finally:
        if wait > 0:
            gw.waiters.cancel(request_id)
    return final or _json(pending, 202)


async def _request_state(request: web.Request, request_id: str) -> tuple[web.Response | None, dict[str, Any]]:
    """The final answer for this request, or None and the pending state to answer 202 with."""
    device_id = _principal(request).id
    state = await _call(request, "policysvc", "request_status", {"request_id": request_id, "device_id": device_id})
    status = state["status"]
    if status in ("allowed", "approved"):
        found = await _call(request, "keysvc", "get_release", {"request_id": request_id, "device_id": device_id})
        if found is not None:
            return _release_response(events.decode_event(found["outcome"].encode())), {}
    if status in ("denied", "expired"):
        disclosed = {k: v for k, v in (state.get("disclosed") or {}).items() if k not in ("effect", "status")}
        raise ExtraProblem(403, "Forbidden", f"the key request was {status}", request_id=request_id, request_status=status,
                           **disclosed)
    keys = ("request_id", "status", "approvals_required", "approvals_received", "expires_at")
    return None, {k: state[k] for k in keys if state.get(k) is not None}


async def heartbeat(request: web.Request) -> web.Response:
    """Agent: fresh facts; policysvc re-checks them and may quarantine (or release) the device."""
    principal = _principal(request)
    body = await body_as(request, HeartbeatBody)
    facts = dict(body.facts)
    facts["observed"] = {"source_ip": request.remote, "request_time": _now().isoformat(), "device_id": principal.id}
    if isinstance(facts.get("identity"), dict):
        facts["identity"] = {**facts["identity"], "device_id": principal.id}
    return _json(await _call(request, "policysvc", "heartbeat", {"device_id": principal.id, "facts": facts}))


# --- notifications: the operator's server-sent event stream ---------------------------------------

# What operators can watch. key.released is left out: it carries sealed key material for one agent.
NOTIFY_PATTERNS = ("approval.*", "device.*", "policy.*", "group.*", "tenant.policy_settings_updated")
NOTIFY_VIA_WAITERS = ("key.decided", "key.release_refused")  # already delivered to the waiters' queue
STREAM_QUEUE_SIZE = 1000
KEEPALIVE_SECONDS = 15.0
DISCONNECT_CHECK_SECONDS = 0.5
# A reconnecting stream (Last-Event-ID) is replayed from the newest events this instance has seen:
# at most this many per tenant, for at most this many tenants (the least recently active go first).
REPLAY_EVENTS_PER_TENANT = 1000
REPLAY_TENANTS = 1000
_EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


@dataclass(eq=False)
class _Subscriber:
    tenant_id: str
    patterns: tuple[str, ...]
    queue: asyncio.Queue[events.Event | None] = field(default_factory=lambda: asyncio.Queue(STREAM_QUEUE_SIZE))
    overflowed: bool = False


def _wanted(event: events.Event, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(event.type, p) for p in patterns)


class Notifier:
    """Fans this instance's notification events out to its open streams, by tenant and type, and
    keeps each tenant's newest events for streams that reconnect with Last-Event-ID."""

    def __init__(self, *, per_tenant: int = REPLAY_EVENTS_PER_TENANT, tenants: int = REPLAY_TENANTS) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._recent: OrderedDict[str, deque[events.Event]] = OrderedDict()
        self._per_tenant = per_tenant
        self._tenants = tenants

    def subscribe(
        self, tenant_id: str, patterns: tuple[str, ...], *, last_event_id: str | None = None
    ) -> tuple[_Subscriber, list[events.Event], bool]:
        """A new stream, the kept events after ``last_event_id`` that it wants, and whether that id
        was still kept (if not, every kept event is given: some may have been missed). Synchronous,
        so no event can fall between the replay and the live queue."""
        subscriber = _Subscriber(tenant_id, patterns)
        self._subscribers.add(subscriber)
        if last_event_id is None:
            return subscriber, [], True
        kept = list(self._recent.get(tenant_id, ()))
        start = next((i + 1 for i, e in enumerate(kept) if e.event_id == last_event_id), None)
        replay = [e for e in kept[start or 0:] if _wanted(e, patterns)]
        return subscriber, replay, start is not None

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        self._subscribers.discard(subscriber)

    def _keep(self, event: events.Event) -> None:
        recent = self._recent.get(event.tenant_id)
        if recent is None:
            recent = self._recent[event.tenant_id] = deque(maxlen=self._per_tenant)
            if len(self._recent) > self._tenants:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(event.tenant_id)
        recent.append(event)

    async def on_event(self, event: events.Event) -> None:
        self._keep(event)
        for subscriber in list(self._subscribers):
            if subscriber.tenant_id != event.tenant_id:
                continue  # SECURITY: a stream only ever carries its own tenant's events
            if not _wanted(event, subscriber.patterns):
                continue
            try:
                subscriber.queue.put_nowait(event)
            except asyncio.QueueFull:
                # A reader this slow is cut off, and told so, rather than silently missing events.
                subscriber.overflowed = True
                self.unsubscribe(subscriber)


NOTIFIER = web.AppKey("notifier", Notifier)


def also_notify(notifier: Notifier, handler: Callable[[events.Event], Awaitable[None]]):
    """Chains the notifier after the release waiters, so key outcomes need no second queue."""

    async def both(event: events.Event) -> None:
        await handler(event)
        if event.type in NOTIFY_VIA_WAITERS:
            await notifier.on_event(event)

    return both


_TYPE_PATTERN = r"^[a-z_]+(\.[a-z_*]+)?$|^\*$"


def _sse(event: events.Event) -> bytes:
    return f"id: {event.event_id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()


async def event_stream(request: web.Request) -> web.StreamResponse:
    """Operator: server-sent events of the tenant's approvals, denials and device posture, filtered by
    `?types=approval.*,key.decided` (shell-style patterns; default all notification types). A stream
    reopened with `Last-Event-ID` (header, or `?last_event_id=`) first gets the events after that
    one from this instance's recent events (see REPLAY_EVENTS_PER_TENANT); if that id is no longer
    kept, an `event: gap` comes first and then every kept event."""
    principal = _principal(request)
    wanted = tuple(t.strip() for t in request.query.get("types", "").split(",") if t.strip()) or ("*",)
    if len(wanted) > 20 or not all(re.match(_TYPE_PATTERN, t) for t in wanted):
        raise ProblemError(400, "Bad Request", "types: comma-separated event types or patterns like approval.*", "types")
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or None
    if last_event_id is not None and not _EVENT_ID.match(last_event_id):
        raise ProblemError(400, "Bad Request", "Last-Event-ID: an event id from this stream", "Last-Event-ID")
    notifier = request.app[NOTIFIER]
    subscriber, replay, complete = notifier.subscribe(principal.tenant_id, wanted, last_event_id=last_event_id)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Correlation-Id": request[CORRELATION_ID]})
    try:
        await response.prepare(request)
        await response.write(b": stream open\n\n")
        if not complete:
            gap = json.dumps({"last_event_id": last_event_id, "replayed": len(replay)})
            await response.write(f"event: gap\ndata: {gap}\n\n".encode())
        for event in replay:
            await response.write(_sse(event))
        idle = 0.0
        while True:
            try:
                event = await asyncio.wait_for(subscriber.queue.get(), DISCONNECT_CHECK_SECONDS)
            except TimeoutError:
                # aiohttp does not cancel a handler whose client left: look, so a stream never lingers.
                if subscriber.overflowed or request.transport is None or request.transport.is_closing():
                    break
                idle += DISCONNECT_CHECK_SECONDS
                if idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    await response.write(b": keepalive\n\n")
                continue
            if event is None:
                break
            await response.write(_sse(event))
            if subscriber.overflowed and subscriber.queue.empty():
                await response.write(b"event: overflow\ndata: {}\n\n")
                break
    except ConnectionResetError:
        pass
    finally:
        notifier.unsubscribe(subscriber)
    return response


__all__ = ["GATEWAY", "NOTIFIER", "PRINCIPAL", "Notifier", "also_notify"]
