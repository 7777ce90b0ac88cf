"""A store client under more concurrent calls than its pool holds, each failure logged with its
traceback as the services log theirs, comes back once the store (killed with SIGKILL) is
restarted on the same data and port. In the test process every service shares one event loop;
a costly traceback renderer starved it, so PyMongo's monitor never finished a hello to the
restarted store and every call kept timing out (tests/e2e/test_store_crash.py with five agents)."""

from __future__ import annotations

import asyncio
import time

import pytest
import structlog

from shared.embedded_mongo import EmbeddedMongo
from shared.store import STORE_UNAVAILABLE, connect

log = structlog.get_logger("tests.store_restart")

CALLERS = 120  # more than the pool's 100 connections


@pytest.fixture
def own_store(tmp_path):
    server = EmbeddedMongo(tmp_path / "store", sync_on_commit=True).start()
    yield server
    server.stop()


async def _caller(collection, stop: asyncio.Event, served: list[int], failed: list[int]) -> None:
    while not stop.is_set():
        try:
            await collection.find_one_and_update({"_id": "counter"}, {"$inc": {"n": 1}}, upsert=True)
            served[0] += 1
        except STORE_UNAVAILABLE:
            failed[0] += 1
            log.exception("store_call_failed")  # what the services' handlers and relays log
            await asyncio.sleep(0.05)


async def _until(predicate, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


async def test_a_busy_store_client_recovers_when_the_killed_store_restarts(own_store):
    # Shorter bounds than the services' (3 s to select or connect, 8 s per call), so the outage is
    # seen in a second or two; the monitor's hello is bounded the same way.
    client = connect(own_store.url, timeout_seconds=1.0, operation_timeout_seconds=2.0)
    collection = client["strongroom_restart"]["counters"]
    stop, served, failed = asyncio.Event(), [0], [0]
    callers = [asyncio.create_task(_caller(collection, stop, served, failed)) for _ in range(CALLERS)]
    try:
        await _until(lambda: served[0] >= 200, "the store never served the callers")
        own_store.kill()
        await _until(lambda: failed[0] >= CALLERS, "the callers never saw the store gone")
        await asyncio.to_thread(own_store.start)  # the same data directory and port
        before = served[0]
        await _until(lambda: served[0] >= before + 200, "the client did not recover after the store restarted")
        stop.set()
        await asyncio.gather(*callers)
        # Every acknowledged increment survived the kill (the log is fsynced on every commit).
        assert (await collection.find_one({"_id": "counter"}))["n"] >= served[0]
    finally:
        stop.set()
        await asyncio.gather(*callers, return_exceptions=True)
        await client.close()
