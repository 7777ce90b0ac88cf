"""A service's stop ends every background task, even one whose first cancellation a library swallowed."""

from __future__ import annotations

import asyncio

from shared.service import Running


async def _store_call(swallowed: list[int]) -> None:
    """What PyMongo was seen to do in a store call, once: the cancellation is caught inside and the
    call returns as if it had finished."""
    try:
        await asyncio.sleep(0.5)
    except asyncio.CancelledError:
        if swallowed:
            raise
        swallowed.append(1)


async def _loop(swallowed: list[int]) -> None:
    """A background loop shaped like keysvc's root follower: a store call, then a sleep."""
    while True:
        await _store_call(swallowed)
        await asyncio.sleep(0.01)


async def test_a_task_that_swallowed_its_cancel_is_cancelled_again_and_the_stop_ends():
    swallowed: list[int] = []
    running = Running("svc", tasks=[asyncio.create_task(_loop(swallowed))])
    await asyncio.sleep(0.05)  # the loop is inside its store call when the stop comes
    stopped: list[bool] = []

    async def on_stop() -> None:
        stopped.append(True)

    running.on_stop.append(on_stop)
    # Bounded only so that the old behaviour (waiting for ever) fails instead of hanging the suite.
    await asyncio.wait_for(running.stop(), timeout=30)
    assert all(task.done() for task in running.tasks) and stopped == [True]
    assert swallowed  # the first cancel really was swallowed: the loop went round again
