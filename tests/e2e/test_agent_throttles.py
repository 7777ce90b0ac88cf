"""Agent calls are throttled per device and per source address (429 + Retry-After past either
budget), and one busy device or address does not hold up the others."""

from __future__ import annotations

import aiohttp
import pytest

from .conftest import Api
from .helpers import EU_FACTS, BareAgent, make_tenant


async def _refused(agent: BareAgent, tenant) -> tuple[int, str, str]:
    body, _ = agent.request_body(tenant.key_id, EU_FACTS)
    async with agent.api.session.post(agent.api.url + "/v1/agent/key-requests", data=body,
                                      headers=agent.signed(body)) as resp:
        return resp.status, resp.headers.get("Retry-After", ""), resp.headers["Content-Type"]


@pytest.mark.stack(gateway={"agent_rate_burst_per_device": 3, "agent_rate_per_second_per_device": 0.01})
async def test_a_device_past_its_budget_gets_429_while_other_devices_carry_on(api):
    tenant = await make_tenant(api)
    busy = await BareAgent.enroll(tenant, api, "vm-busy")
    quiet = await BareAgent.enroll(tenant, api, "vm-quiet")
    for _ in range(3):
        status, out, _ = await busy.request(tenant.key_id, EU_FACTS)
        assert status == 200, out
    status, retry_after, ctype = await _refused(busy, tenant)
    assert status == 429 and int(retry_after) > 0 and ctype.startswith("application/problem+json")
    status, out, key = await quiet.request(tenant.key_id, EU_FACTS)
    assert status == 200 and key, out


@pytest.mark.stack(gateway={"agent_rate_burst_per_address": 4, "agent_rate_per_second_per_address": 0.01})
async def test_an_address_past_its_budget_gets_429_while_other_addresses_carry_on(api, stack):
    tenant = await make_tenant(api)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as session:
        behind_nat = await BareAgent.enroll(tenant, Api(session, stack.url), "vm-nat")  # one call...
        for _ in range(3):  # ...and three: the address's four
            status, out, _ = await behind_nat.request(tenant.key_id, EU_FACTS)
            assert status == 200, out
        status, retry_after, _ = await _refused(behind_nat, tenant)
        assert status == 429 and int(retry_after) > 0
    elsewhere = await BareAgent.enroll(tenant, api, "vm-elsewhere")
    status, out, key = await elsewhere.request(tenant.key_id, EU_FACTS)
    assert status == 200 and key, out
