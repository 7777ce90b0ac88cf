"""Waiting for the outcome of a key request: the gateway's side of the release pipeline.

A waiter is registered before `key.requested` is published, so an outcome can never
arrive unexpected. Outcomes of requests this instance does not wait for are ignored
(another gateway instance is waiting for them).
"""

from __future__ import annotations

import asyncio

from shared.events import Event, KeyDecided, KeyReleased, KeyReleaseRefused

# An allowed request is answered by keysvc's key.released (or refusal), never by the decision.
RELEASE_OUTCOMES = ["key.decided.deny", "key.decided.require_approval", "key.released", "key.release_refused"]


class ReleaseWaiters:
    def __init__(self) -> None:
        self._waiting: dict[str, asyncio.Future[Event]] = {}

    def expect(self, request_id: str) -> asyncio.Future[Event]:
        future: asyncio.Future[Event] = asyncio.get_running_loop().create_future()
        self._waiting[request_id] = future
        return future

    def cancel(self, request_id: str) -> None:
        self._waiting.pop(request_id, None)

    async def on_outcome(self, event: Event) -> None:
        if isinstance(event, KeyDecided) and event.effect == "allow":
            return  # keysvc will answer with the release or a refusal
        if not isinstance(event, (KeyDecided, KeyReleased, KeyReleaseRefused)):
            return
        future = self._waiting.pop(event.request_id, None)
        if future is not None and not future.done():
            future.set_result(event)
