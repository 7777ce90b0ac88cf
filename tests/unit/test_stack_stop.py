"""A service whose stop ignores cancellation is abandoned after the stop timeout, not waited for."""

from __future__ import annotations

import asyncio

from launch import stack as stack_module
from launch.stack import Stack


class _Stubborn:
    """A running service whose stop never ends and shrugs off cancellation (as a loop that
    swallowed its cancel would)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()

    async def stop(self) -> None:
        while not self.release.is_set():
            try:
                await self.release.wait()
            except asyncio.CancelledError:
                continue


async def test_a_stop_that_ignores_cancellation_is_abandoned_after_the_timeout(monkeypatch):
    monkeypatch.setattr(stack_module, "STOP_TIMEOUT", 0.2)
    stack = Stack(client=None, bus_for=None, gateway_settings=None, policy_settings=None,  # type: ignore[arg-type]
                  key_settings=None, audit_settings=None, root_key=None)  # type: ignore[arg-type]
    stubborn = _Stubborn()
    stack.running["keysvc"] = stubborn  # type: ignore[assignment]
    try:
        done, _ = await asyncio.wait({asyncio.ensure_future(stack.stop("keysvc"))}, timeout=10)
        assert done, "the stack waited for a stop that never ends"
        assert "keysvc" not in stack.running
    finally:
        stubborn.release.set()
        await asyncio.sleep(0.05)
