"""An operator's text with every character the SIEM formats treat specially, and a line break,
goes in through the HTTP API and comes back out of each export format unchanged; rsyslog's own
RFC 5424 parser reads the structured data the way it was sent."""

from __future__ import annotations

import asyncio
import json

from tests.unit.siem_readers import READERS, expected, parse_syslog

from .helpers import EU_FACTS, BareAgent, audit_records_until, make_tenant
from .test_audit_forwarders import Rsyslog

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
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200  # a decision with its trace, a release
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


class ParsingRsyslog(Rsyslog):
    """rsyslogd writing what its RFC 5424 parser made of each message: MSGID and STRUCTURED-DATA
    (a message it could not parse as RFC 5424 would show "-" there)."""

    def __init__(self, root):
        super().__init__(root)
        conf = self.conf.read_text().replace('string="%rawmsg%\\n"', 'string="%msgid% %structured-data%\\n"')
        assert "%structured-data%" in conf
        self.conf.write_text(conf)

    def parsed(self) -> list[tuple[str, dict[str, str]]]:
        if not self.out.exists():
            return []
        out = []
        for line in self.out.read_text(encoding="utf-8").splitlines():
            msgid, _, sd = line.partition(" ")
            (params,) = parse_syslog(f"<110>1 2026-01-01T00:00:00Z - - - {msgid} {sd}")["sd"].values()
            out.append((msgid, params))
        return out


async def test_rsyslog_parses_the_structured_data_it_receives(api, stack, tmp_path):
    receiver = ParsingRsyslog(tmp_path / "rsyslog")
    await receiver.start()
    try:
        tenant, revoked = await _revoked_with_reason(api)
        status, fwd, _ = await tenant.admin.call("POST", "/v1/audit/forwarders", json={
            "name": "siem", "kind": "syslog_tcp", "host": "127.0.0.1", "port": receiver.port, "format": "syslog"})
        assert status == 201, fwd
        sent = {}
        for line in await _export(api, tenant.admin.token, "syslog"):
            (params,) = parse_syslog(line)["sd"].values()
            sent[int(params["seq"])] = params
        deadline = asyncio.get_running_loop().time() + 30
        while len(receiver.parsed()) < len(sent):
            assert asyncio.get_running_loop().time() < deadline, receiver.parsed()
            await asyncio.sleep(0.05)
        received = {int(params["seq"]): (msgid, params) for msgid, params in receiver.parsed()}
        # The forwarder's own forwarder.created record may land after the export was taken.
        assert {seq: received[seq][1] for seq in sent} == sent
        msgid, params = received[revoked["seq"]]
        assert msgid == "device.revoked" and json.loads(params["details"])["reason"] == REASON
    finally:
        await receiver.stop()
