"""The store process (SecantusDB) is killed (SIGKILL) under load and restarted on the same data
and port: requests meanwhile get 503 + Retry-After, not hangs, and the SDK retries them; every
release completes or is cleanly refused, every audit record is there exactly once, every chain
verifies; the longest stall is printed."""

from __future__ import annotations

import asyncio

import pytest

from shared.embedded_mongo import EmbeddedMongo

from .helpers import EU_FACTS, BareAgent
from .load import Load

AGENTS = 5


@pytest.fixture
def own_store(tmp_path):
    # Log fsynced on every commit, as a production store journals: without it SecantusDB, killed,
    # comes back without writes it had acknowledged (measured: 24 of 50 inserts kept).
    server = EmbeddedMongo(tmp_path / "store", sync_on_commit=True).start()
    yield server
    server.stop()


@pytest.fixture
def mongo_url(own_store):
    return own_store.url


# A request whose outcome waits on a service still catching up is answered 504 at this deadline
# (counted as refused) rather than after the default 30 s.
@pytest.mark.stack(gateway={"release_timeout_seconds": 8.0})
async def test_the_store_killed_mid_load_answers_503_meanwhile_and_loses_nothing(api, stack, own_store):
    load = await Load.prepare(api, agents=AGENTS)
    bare = BareAgent(api, load.identities[0].private_key, load.identities[0].key_id, load.tenant.tenant_id)
    stop = asyncio.Event()
    running = asyncio.create_task(load.run(stop))
    await load.until_confirmed(15)
    own_store.kill()
    body, _ = bare.request_body(load.tenant.key_id, EU_FACTS)
    async with api.session.post(api.url + "/v1/agent/key-requests", data=body, headers=bare.signed(body)) as resp:
        status, problem, retry_after = resp.status, await resp.json(content_type=None), resp.headers.get("Retry-After")
    await asyncio.to_thread(own_store.start)  # the same data directory and port
    assert status == 503 and problem["detail"] == "the store is unavailable; retry later", problem
    assert retry_after is not None and int(retry_after) > 0
    await load.until_confirmed(15)
    stop.set()
    await running
    await load.check_audit(api, stack, "store killed")
