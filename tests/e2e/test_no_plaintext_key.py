"""The plaintext data key exists only in the agent: not on the bus, not in any store document."""

from __future__ import annotations

import asyncio
import base64

import bson

from shared.bus import RabbitBus

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant


async def test_released_key_bytes_appear_nowhere_but_in_the_agent(api, stack, amqp_url, mongo_client):
    raw_messages: list[bytes] = []
    spy = RabbitBus(amqp_url, prefix=stack.gateway_settings.bus_prefix)
    await spy.start()

    async def capture(event):
        raw_messages.append(event.model_dump_json().encode())

    await spy.listen(["#"], capture)
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, _, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and len(key) == 32
    status, _, _ = await tenant.admin.call("POST", f"/v1/keys/{tenant.key_id}/rotate", json={})
    status, _, key2 = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200
    await audit_records(tenant.admin, expect_at_least=13)
    await asyncio.sleep(0.3)
    await spy.close()

    assert any(b"key.released" in m for m in raw_messages), "the spy saw the release"
    needles = []
    for k in (key, key2):
        needles += [k, base64.b64encode(k), base64.urlsafe_b64encode(k), k.hex().encode()]

    haystack = list(raw_messages)
    prefix = stack.gateway_settings.db_prefix
    names = [n for n in await mongo_client.list_database_names() if n.startswith(prefix)]
    assert len(names) == 4, names
    documents = 0
    for name in names:
        db = mongo_client[name]
        for collection in await db.list_collection_names():
            async for doc in db[collection].find({}):
                haystack.append(bson.encode(doc))
                documents += 1
    assert documents > 20
    for blob in haystack:
        for needle in needles:
            assert needle not in blob
