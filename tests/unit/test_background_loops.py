"""Background loops log a failed round and go on, but a stop always ends them, even when the
cancellation reaches them dressed as another error (as PyMongo reports a connection cut by it)."""

from __future__ import annotations

import asyncio
from datetime import datetime

import pytest

from services.keysvc import scheduler as keysvc_scheduler
from services.policysvc.scheduler import Scheduler
from shared.outbox import Outbox


class _StoreGone(Exception):
    """What a store client raises when the operation it was in was cut short."""


DRESSED = {"on": True}  # off once a test is over, so a loop that failed it can still be ended


async def _cut_short(*_args, **_kwargs):
    try:
        await asyncio.sleep(3600)
    except asyncio.CancelledError:
        if DRESSED["on"]:
            raise _StoreGone("connection closed") from None
        raise


class _Lease:
    async def acquire(self) -> bool:
        return True


class _Collection:
    def find(self, *_args, **_kwargs):
        return self

    def __aiter__(self):
        return self

    async def __anext__(self):
        await _cut_short()


def _loops():
    async def sweep(now: datetime) -> datetime | None:
        return await _cut_short()

    yield "policysvc sweeps", lambda: Scheduler(sweep, max_sleep=3600).run()
    yield "keysvc jobs", lambda: keysvc_scheduler.run(_Lease(), {"job": _cut_short}, interval=3600)
    yield "outbox relay", lambda: Outbox(_cut_short, [_Collection()]).run(interval=0)


@pytest.mark.parametrize("name,loop", list(_loops()), ids=[n for n, _ in _loops()])
async def test_a_stop_that_arrives_as_another_error_still_ends_the_loop(name, loop):
    task = asyncio.create_task(loop())
    await asyncio.sleep(0.05)  # inside the round, waiting on the store
    task.cancel()
    try:
        done, _ = await asyncio.wait([task], timeout=10)
        assert done, f"{name} swallowed its stop and went on"
        assert task.cancelled()
    finally:
        DRESSED["on"] = False
        while not task.done():
            task.cancel()
            await asyncio.wait([task], timeout=0.1)
        DRESSED["on"] = True
