"""An operator's text with every character the SIEM formats treat specially, and a line break,
goes in through the HTTP API and comes back out of each export format unchanged."""

from __future__ import annotations

import json

from tests.unit.siem_readers import READERS, expected

from .helpers import BareAgent, audit_records_until, make_tenant

# The revocation reason is free text an operator types: pipes, equals, backslashes, LEEF's
# delimiter, a closing bracket, quotes, line breaks, a tab and non-ASCII.
REASON = 'lost in transit | ticket=INC-7 \\ share C:\\keys ^ caret [x] "quoted"\nsecond line\r\n\tende ü'


async def _export(api, token: str, fmt: str) -> list[str]:
    async with api.session.get(f"{api.url}/v1/audit/export?format={fmt}",
                               headers={"Authorization": f"Bearer {token}"}) as resp:
        text = await resp.text()
        assert resp.status == 200, text
        assert text.count("\n") == int(resp.headers["X-Record-Count"]), f"{fmt}: a record spans lines"
        return text.splitlines()


async def _revoked_with_reason(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, out, _ = await tenant.admin.call("POST", f"/v1/devices/{agent.device_id}/revoke", json={"reason": REASON})
    assert status == 200, out
    await audit_records_until(tenant.admin, lambda rs: any(r["action"] == "device.revoked" for r in rs))
    records = [json.loads(line) for line in await _export(api, tenant.admin.token, "records")]
    (revoked,) = [r for r in records if r["action"] == "device.revoked"]
    assert revoked["details"]["reason"] == REASON
    return tenant, revoked


async def test_revocation_reason_survives_every_export_format(api, stack):
    tenant, revoked = await _revoked_with_reason(api)
    for fmt, read in sorted(READERS.items()):
        back = [read(line)[1] for line in await _export(api, tenant.admin.token, fmt)]
        (mine,) = [r for r in back if r["event_id"] == revoked["event_id"]]
        assert mine["details"]["reason"] == REASON, fmt
        assert mine == expected(revoked, fmt), fmt
