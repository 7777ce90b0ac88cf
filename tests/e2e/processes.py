"""Pausing a test's own store process (SIGSTOP) and knowing it has really stopped."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from pathlib import Path


def thread_states(pid: int) -> set[str]:
    """The scheduler state letter of each of the process's threads (`T` once stopped)."""
    states = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(FileNotFoundError):  # a thread that just ended
            states.add(task.joinpath("stat").read_text().rsplit(")", 1)[1].split()[0])
    return states


async def paused(pid: int) -> None:
    """Until every thread has stopped: SIGSTOP stops a busy process a moment after `kill` returns,
    and a store still answering in that moment made outage tests see no outage."""
    deadline = asyncio.get_running_loop().time() + 30
    while thread_states(pid) != {"T"}:
        assert asyncio.get_running_loop().time() < deadline, f"the store process did not stop: {thread_states(pid)}"
        await asyncio.sleep(0.01)


@contextlib.asynccontextmanager
async def store_paused(pid: int) -> AsyncIterator[None]:
    """The store process stopped (every thread) for the block, resumed after it whatever happens."""
    os.kill(pid, signal.SIGSTOP)
    try:
        await paused(pid)
        yield
    finally:
        os.kill(pid, signal.SIGCONT)
