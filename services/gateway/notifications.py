"""Operator notifications: this instance's fan-out of policy, approval and device events by tenant,
with a short replay buffer, and the server-sent event stream operators watch.

Each event goes only to streams whose credential may read it (`EVENT_PERMISSIONS`, deny by
default), and a stream re-checks its credential every `stream_recheck_seconds` and at once when
its tenant's accounts change (a logout, a revoked token or role): an ended credential ends the
stream with `event: end`."""

from __future__ import annotations

import asyncio
import fnmatch
import json
import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from aiohttp import web

from shared import events
from shared.rpc import ProblemError

from .auth import Principal, Unauthorized
from .state import CORRELATION_ID, GATEWAY, _principal
from .stream_binding import OnDemandBinding

# What operators can watch, and the permission that reads each (first match wins; an event type
# matching no row is never sent). key.released is watched without its sealed key (`_watchable`).
EVENT_PERMISSIONS: tuple[tuple[str, str], ...] = (
    ("approval.*", "approvals.read"),
    ("key.requested", "decisions.read"),  # an agent's request as it came in (facts, provenance; public keys only)
    ("key.decided", "decisions.read"),
    ("key.released", "decisions.read"),
    ("key.release_refused", "decisions.read"),
    ("device.*", "devices.read"),
    ("policy.*", "policies.read"),
    ("group.*", "groups.read"),
    ("tenant.policy_settings_updated", "policies.read"),
    ("volume.*", "volumes.read"),
)
NOTIFY_VIA_WAITERS = ("key.decided", "key.released", "key.release_refused")  # already delivered to the waiters' queue
# One per release: bound only while a stream here may receive it, and a while after (`stream_binding`).
NOTIFY_ON_DEMAND = ("key.requested",)
NOTIFY_PATTERNS = tuple(p for p, _ in EVENT_PERMISSIONS if p not in NOTIFY_VIA_WAITERS + NOTIFY_ON_DEMAND)
STREAM_QUEUE_SIZE = 1000
KEEPALIVE_SECONDS = 15.0
DISCONNECT_CHECK_SECONDS = 0.5
# A reconnecting stream (Last-Event-ID) is replayed from the newest events this instance has seen:
# at most this many per tenant, for at most this many tenants (the least recently active go first).
REPLAY_EVENTS_PER_TENANT = 1000
REPLAY_TENANTS = 1000
EVENT_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_TYPE_PATTERN = r"^[a-z_]+(\.[a-z_*]+)?$|^\*$"


def permission_for(event_type: str) -> str | None:
    """The permission that reads events of this type; None (nobody) for a type not in the table."""
    return next((perm for pattern, perm in EVENT_PERMISSIONS if fnmatch.fnmatchcase(event_type, pattern)), None)


def may_read(principal: Principal, event_type: str) -> bool:
    permission = permission_for(event_type)
    return permission is not None and principal.may(permission)


@dataclass(eq=False)
class _Subscriber:
    tenant_id: str
    patterns: tuple[str, ...]
    queue: asyncio.Queue[events.Event] = field(default_factory=lambda: asyncio.Queue(STREAM_QUEUE_SIZE))
    overflowed: bool = False
    recheck: bool = False  # the tenant's accounts changed: check the stream's credential now
    holds: bool = False  # keeps the on-demand types bound


def _wanted(event: events.Event, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(event.type, p) for p in patterns)


class Notifier:
    """Fans this instance's notification events out to its open streams, by tenant and type, and
    keeps each tenant's newest events for streams that reconnect with Last-Event-ID."""

    def __init__(self, *, per_tenant: int = REPLAY_EVENTS_PER_TENANT, tenants: int = REPLAY_TENANTS,
                 on_demand: OnDemandBinding | None = None) -> None:
        self._subscribers: set[_Subscriber] = set()
        self._recent: OrderedDict[str, deque[tuple[float, events.Event]]] = OrderedDict()  # (loop time kept, event)
        self._per_tenant = per_tenant
        self._tenants = tenants
        self.on_demand = on_demand

    async def open(
        self, tenant_id: str, patterns: tuple[str, ...], *, last_event_id: str | None = None
    ) -> tuple[_Subscriber, list[events.Event], bool]:
        """`subscribe`, and once the types the stream may want that are bound only on demand are."""
        opened = self.subscribe(tenant_id, patterns, last_event_id=last_event_id)
        if opened[0].holds:
            try:
                await self.on_demand.ready()  # type: ignore[union-attr]
            except BaseException:  # the client left meanwhile: its hold goes with it
                self.unsubscribe(opened[0])
                raise
        return opened

    def subscribe(
        self, tenant_id: str, patterns: tuple[str, ...], *, last_event_id: str | None = None
    ) -> tuple[_Subscriber, list[events.Event], bool]:
        """A new stream, the kept events after ``last_event_id`` that it wants, and whether that id
        was still kept (if not, every kept event is given: some may have been missed). Synchronous,
        so no event can fall between the replay and the live queue."""
        subscriber = _Subscriber(tenant_id, patterns)
        self._subscribers.add(subscriber)
        # Kept events of the on-demand types are whole only since they were last bound.
        since = 0.0
        if self.on_demand is not None and self.on_demand.wanted_by(patterns):
            subscriber.holds, since = True, self.on_demand.bound_since or float("inf")
            self.on_demand.hold()
        if last_event_id is None:
            return subscriber, [], True
        kept = list(self._recent.get(tenant_id, ()))
        start = next((i + 1 for i, (_, e) in enumerate(kept) if e.event_id == last_event_id), None)
        replay = [e for _, e in kept[start or 0:] if _wanted(e, patterns)]
        return subscriber, replay, start is not None and kept[start - 1][0] >= since

    def unsubscribe(self, subscriber: _Subscriber) -> None:
        if subscriber in self._subscribers:
            self._subscribers.discard(subscriber)
            if subscriber.holds:
                self.on_demand.release()  # type: ignore[union-attr]

    def recheck(self, tenant_id: str | None) -> None:
        """A credential of this tenant (None: of any) may have ended or lost permissions: its
        streams look now."""
        for subscriber in self._subscribers:
            if tenant_id is None or subscriber.tenant_id == tenant_id:
                subscriber.recheck = True

    def _keep(self, event: events.Event) -> None:
        recent = self._recent.get(event.tenant_id)
        if recent is None:
            recent = self._recent[event.tenant_id] = deque(maxlen=self._per_tenant)
            if len(self._recent) > self._tenants:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(event.tenant_id)
        recent.append((asyncio.get_running_loop().time(), event))

    async def on_event(self, event: events.Event) -> None:
        event = _watchable(event)
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


def _watchable(event: events.Event) -> events.Event:
    """SECURITY: a released key's sealed copy is the requesting agent's alone (HPKE to its one-time
    key): streams see that it was released, never the ciphertext, and none is kept here."""
    if isinstance(event, events.KeyReleased):
        return event.model_copy(update={"sealed_key": ""})
    return event


NOTIFIER = web.AppKey("notifier", Notifier)


def _sse(event: events.Event) -> bytes:
    return f"id: {event.event_id}\nevent: {event.type}\ndata: {event.model_dump_json()}\n\n".encode()


async def event_stream(request: web.Request) -> web.StreamResponse:
    """Operator: server-sent events of the tenant's raw key requests, approvals, denials, releases and
    device posture (each only to a credential whose permission reads it), filtered by
    `?types=approval.*,key.decided` (shell-style patterns; default all notification types). A stream
    reopened with `Last-Event-ID` (header, or `?last_event_id=`) first gets the events after that
    one from this instance's recent events (see REPLAY_EVENTS_PER_TENANT); if that id is no longer
    kept, an `event: gap` comes first and then every kept event."""
    principal = _principal(request)
    wanted = tuple(t.strip() for t in request.query.get("types", "").split(",") if t.strip()) or ("*",)
    if len(wanted) > 20 or not all(re.match(_TYPE_PATTERN, t) for t in wanted):
        raise ProblemError(400, "Bad Request", "types: comma-separated event types or patterns like approval.*", "types")
    last_event_id = request.headers.get("Last-Event-ID") or request.query.get("last_event_id") or None
    if last_event_id is not None and not EVENT_ID.match(last_event_id):
        raise ProblemError(400, "Bad Request", "Last-Event-ID: an event id from this stream", "Last-Event-ID")
    notifier = request.app[NOTIFIER]
    subscriber, replay, complete = await notifier.open(principal.tenant_id, wanted, last_event_id=last_event_id)
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           "X-Correlation-Id": request[CORRELATION_ID]})
    try:
        await response.prepare(request)
        await response.write(b": stream open\n\n")
        if not complete:
            gap = json.dumps({"last_event_id": last_event_id, "replayed": len(replay)})
            await response.write(f"event: gap\ndata: {gap}\n\n".encode())
        for event in replay:
            if may_read(principal, event.type):
                await response.write(_sse(event))
        await _follow(request, response, subscriber, principal)
    except ConnectionResetError:
        pass
    finally:
        notifier.unsubscribe(subscriber)
    return response


async def _still_allowed(request: web.Request) -> Principal | None:
    """The stream's credential as it stands now, or None once it has ended or may not watch."""
    try:
        principal = await request.app[GATEWAY].operators.authenticate(request)
    except Unauthorized:
        return None
    return principal if principal.may("events.read") else None


async def _follow(request: web.Request, response: web.StreamResponse, subscriber: _Subscriber,
                  principal: Principal) -> None:
    """Live events, each sent only if the (re-checked) credential may read it."""
    loop = asyncio.get_running_loop()
    every = request.app[GATEWAY].settings.stream_recheck_seconds
    next_check = loop.time() + every
    idle = 0.0
    while True:
        try:
            event: events.Event | None = await asyncio.wait_for(subscriber.queue.get(), DISCONNECT_CHECK_SECONDS)
        except TimeoutError:
            event = None
        if subscriber.recheck or loop.time() >= next_check:
            subscriber.recheck, next_check = False, loop.time() + every
            current = await _still_allowed(request)
            if current is None:
                await response.write(b'event: end\ndata: {"reason": "credential ended"}\n\n')
                return
            principal = current
        if event is None:
            # aiohttp does not cancel a handler whose client left: look, so a stream never lingers.
            if subscriber.overflowed or request.transport is None or request.transport.is_closing():
                return
            idle += DISCONNECT_CHECK_SECONDS
            if idle >= KEEPALIVE_SECONDS:
                idle = 0.0
                await response.write(b": keepalive\n\n")
            continue
        if may_read(principal, event.type):
            await response.write(_sse(event))
        if subscriber.overflowed and subscriber.queue.empty():
            await response.write(b"event: overflow\ndata: {}\n\n")
            return
