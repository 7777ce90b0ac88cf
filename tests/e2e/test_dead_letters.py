"""A malformed message reaching a service is dead-lettered with its reason; the service goes on."""

from __future__ import annotations

import asyncio

from .helpers import EU_FACTS, BareAgent, make_tenant


async def test_policysvc_dead_letters_garbage_and_keeps_deciding(api, stack):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    gateway_bus = stack.buses["gateway"]
    await gateway_bus.publish_raw("key.requested", b"\xff\xfe not even utf-8")
    await gateway_bus.publish_raw("key.requested", b'{"type": "key.requested", "version": 1, "tenant_id": "t"}')
    status, _, key = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200 and key
    letters = []
    deadline = asyncio.get_running_loop().time() + 10
    while len(letters) < 4 and asyncio.get_running_loop().time() < deadline:
        letters += await gateway_bus.dead_letters()
        await asyncio.sleep(0.1)
    # policysvc and auditsvc (it binds every routing key) each received both messages; the gateway's
    # notify queue binds raw requests only while an operator stream is open (none here).
    assert len(letters) == 4, letters
    assert sum("not JSON" in letter.reason for letter in letters) == 2
    assert sum("request_id: Field required" in letter.reason for letter in letters) == 2
