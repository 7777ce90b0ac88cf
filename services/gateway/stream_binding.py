"""Event types bound to this gateway's notify queue only while an operator stream here wants them.

Every release publishes one raw `key.requested`; bound for good, each would be delivered to, and
decoded by, every gateway instance whether or not anyone watches. The notifier binds such types
(`notifications.NOTIFY_ON_DEMAND`) when the first stream that may receive them opens, and unbinds
them `stream_binding_linger_seconds` after the last one closed, so a browser reconnecting with its
Last-Event-ID soon after finds what came meanwhile in the replay buffer. A bind or unbind the
broker did not take is tried again every `RETRY_SECONDS` while it is still wanted.
"""

from __future__ import annotations

import asyncio
import fnmatch

import structlog

from shared.bus_listen import Listening
from shared.delivery import Unavailable

log = structlog.get_logger("strongroom.gateway")

RETRY_SECONDS = 1.0


class OnDemandBinding:
    def __init__(self, types: tuple[str, ...], *, linger: float) -> None:
        self.types = types
        self._linger = linger
        self._listening: Listening | None = None
        self._holders = 0
        self._lingering: asyncio.TimerHandle | None = None
        self._retry: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._bound = False
        # loop.time() at which the last bind took effect, None while unbound: events of these types
        # before it may be missing from the replay buffer.
        self.bound_since: float | None = None

    def attach(self, listening: Listening) -> None:
        """The notify queue whose bindings this changes (until then nothing is bound)."""
        self._listening = listening
        self._reconcile()

    def wanted_by(self, patterns: tuple[str, ...]) -> bool:
        """Whether a stream following `patterns` can receive any of these types."""
        return any(fnmatch.fnmatchcase(t, p) for t in self.types for p in patterns)

    def bound(self) -> bool:
        return self._bound

    def hold(self) -> None:
        """A stream that wants these types opened: bind them (if they are not already)."""
        self._holders += 1
        if self._lingering is not None:
            self._lingering.cancel()
            self._lingering = None
        self._reconcile()

    def release(self) -> None:
        """That stream closed: the last one to close unbinds the types after the linger."""
        self._holders -= 1
        if self._holders == 0:
            self._lingering = asyncio.get_running_loop().call_later(self._linger, self._linger_over)

    def _linger_over(self) -> None:
        self._lingering = None
        self._reconcile()

    def _retry_now(self) -> None:
        self._retry = None
        self._reconcile()

    def _wanted(self) -> bool:
        return self._holders > 0 or self._lingering is not None

    def _reconcile(self) -> None:
        if self._listening is not None and (self._task is None or self._task.done()) and self._wanted() != self._bound:
            self._task = asyncio.create_task(self._apply(self._listening))

    async def _apply(self, listening: Listening) -> None:
        """Binds or unbinds until the binding is what the open streams want (they may change meanwhile)."""
        while (want := self._wanted()) != self._bound:
            try:
                for each in self.types:
                    await (listening.bind(each) if want else listening.unbind(each))
            except Unavailable as exc:
                log.warning("stream_binding_failed", bind=want, error=str(exc))
                if self._retry is None:
                    self._retry = asyncio.get_running_loop().call_later(RETRY_SECONDS, self._retry_now)
                return
            self._bound = want
            self.bound_since = asyncio.get_running_loop().time() if want else None

    async def ready(self) -> None:
        """Returns once a bind under way has ended (taken or not): a stream opened now then misses
        nothing it may receive, unless the broker is away."""
        if self._task is not None and not self._task.done():
            await asyncio.shield(self._task)

    async def close(self) -> None:
        for handle in (self._lingering, self._retry):
            if handle is not None:
                handle.cancel()
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        self._listening = None
