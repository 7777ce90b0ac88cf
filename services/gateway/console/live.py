"""Server-sent HTML for the console's live parts, fed by the gateway's notifier (the source the
API's `/v1/events/stream` reads): each event the signed-in principal may read (`may_read`, the
API's table) is rendered by the screen and sent as one unnamed SSE message, which htmx swaps in.

A stream ends when its client leaves, its session ends or loses the permission, or the gateway
shuts down (`closing`, set in `app.on_shutdown`: aiohttp does not cancel a handler parked on a
queue, so every wait here is bounded)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from aiohttp import web

from shared import events

from ..notifications import EVENT_ID, NOTIFIER, may_read
from ..state import GATEWAY, PRINCIPAL
from .web import SECURITY_HEADERS, signed_in

WAIT_SECONDS = 0.5
KEEPALIVE_SECONDS = 15.0


@dataclass
class Live:
    """The console's open streams are told to end when this is set."""

    closing: asyncio.Event = field(default_factory=asyncio.Event)


LIVE = web.AppKey("console_live", Live)


async def close_streams(app: web.Application) -> None:
    app[LIVE].closing.set()


def frame(html: str, event_id: str | None = None) -> bytes:
    """One unnamed SSE message carrying `html` (every line its own `data:` field), with the event's
    id when it stands for one (the browser sends the last id back as Last-Event-ID on reconnect)."""
    head = f"id: {event_id}\n" if event_id else ""
    return (head + "".join(f"data: {line}\n" for line in html.splitlines() or [""]) + "\n").encode()


Renderer = Callable[[events.Event], Awaitable[str | None]]


def _last_event_id(request: web.Request) -> str | None:
    """The Last-Event-ID a reconnecting browser sent, if it is shaped like an event id (anything
    else is answered as an id no longer kept)."""
    given = request.headers.get("Last-Event-ID")
    if given is None:
        return None
    return given if EVENT_ID.match(given) else ""


async def _send(response: web.StreamResponse, principal, event: events.Event, render: Renderer) -> None:
    """The event as `render` makes it, with its id; an event the filter leaves out moves the
    browser's Last-Event-ID on without a row (an id-only message); one the principal may not read
    is not mentioned at all."""
    if not may_read(principal, event.type):
        return
    html = await render(event)
    if html is None:
        await response.write(f"id: {event.event_id}\n\n".encode())
    else:
        await response.write(frame(html, event.event_id))


async def stream(request: web.Request, patterns: tuple[str, ...], render: Renderer,
                 initial: Callable[[], Awaitable[str]] | None = None,
                 gap: Callable[[], str] | None = None) -> web.StreamResponse:
    """Follows the principal's tenant's events matching `patterns`, sending what `render` makes of
    each (None: nothing); `initial`, if given, is sent first (a reconnecting view misses nothing).
    Without `initial`, a reconnecting browser's Last-Event-ID is answered from the notifier's replay
    buffer (this instance's newest events per tenant, `notifications.REPLAY_EVENTS_PER_TENANT`):
    the kept events after that id, or, when the id is no longer kept (older than the buffer, or
    seen by another gateway instance), `gap()` and then every kept event."""
    principal = request[PRINCIPAL]
    notifier = request.app[NOTIFIER]
    closing = request.app[LIVE].closing
    last_event_id = _last_event_id(request) if initial is None else None
    # A malformed id ("") is looked up as "-", which no event bears: answered as an id not kept.
    subscriber, replay, kept = await notifier.open(principal.tenant_id, patterns, last_event_id=(
        None if last_event_id is None else last_event_id or "-"))
    response = web.StreamResponse(headers={**SECURITY_HEADERS, "Content-Type": "text/event-stream"})
    loop = asyncio.get_running_loop()
    every = request.app[GATEWAY].settings.stream_recheck_seconds
    next_check, idle = loop.time() + every, 0.0
    try:
        await response.prepare(request)
        await response.write(b": stream open\n\n")
        if initial is not None:
            await response.write(frame(await initial()))
        if last_event_id is not None and not kept and gap is not None:
            await response.write(frame(gap()))
        for event in replay:
            await _send(response, principal, event, render)
        while not closing.is_set():
            try:
                event: events.Event | None = await asyncio.wait_for(subscriber.queue.get(), WAIT_SECONDS)
            except TimeoutError:
                event = None
            if subscriber.recheck or loop.time() >= next_check:
                subscriber.recheck, next_check = False, loop.time() + every
                found = await signed_in(request)
                if found is None or not found[0].may("events.read"):
                    await response.write(b"event: end\ndata: session ended\n\n")
                    break
                principal = request[PRINCIPAL] = found[0]
            if event is None:
                if subscriber.overflowed or request.transport is None or request.transport.is_closing():
                    break
                idle += WAIT_SECONDS
                if idle >= KEEPALIVE_SECONDS:
                    idle = 0.0
                    await response.write(b": keepalive\n\n")
                continue
            await _send(response, principal, event, render)
        if closing.is_set():
            await response.write(b"event: end\ndata: gateway shutting down\n\n")
    except ConnectionResetError:
        pass
    finally:
        notifier.unsubscribe(subscriber)
    return response
