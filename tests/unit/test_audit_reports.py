"""Reports: the fold over records, and CSV/HTML rendering that neutralises formulas and markup."""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime

from services.auditsvc import reports

NOW = datetime(2025, 3, 1, tzinfo=UTC)


def rec(action, resource, outcome="success", reasons=(), **details):
    rtype, rid = resource
    return {"action": action, "resource": {"type": rtype, "id": rid}, "outcome": outcome,
            "reasons": list(reasons), "details": details, "time": "2025-01-01T00:00:00Z"}


RECORDS = [
    rec("key.created", ("key", "k1"), name="payroll"),
    rec("key.created", ("key", "k2"), name="=HYPERLINK(\"http://x\")"),
    rec("key.state_changed", ("key", "k2"), to_state="suspended"),
    rec("device.enrolled", ("device", "d1")),
    rec("device.enrolled", ("device", "<script>alert(1)</script>")),
    rec("device.revoked", ("device", "d1")),
    rec("key.decided", ("key", "k1"), device_id="d1", request_id="r1", decided_by=[{"policy_name": "eu"}]),
    rec("key.released", ("key", "k1"), device_id="d1", request_id="r1"),
    rec("key.decided", ("key", "k1"), "denied", ["region us-east-1 not allowed"], device_id="d2", request_id="r2",
        decided_by=[{"policy_name": "eu"}]),
    rec("key.decided", ("key", "k2"), "denied", ["region us-east-1 not allowed", "firewall off"], device_id="d2",
        request_id="r3"),
    rec("approval.requested", ("approval", "a1")),
    rec("approval.expired", ("approval", "a1")),
]


def test_report_counts_releases_denials_reasons_keys_and_devices():
    r = reports.build(RECORDS, tenant_id="t1", since=None, until=None, now=NOW)
    assert r["totals"] == {"releases": 1, "denials": 2, "refusals": 0}
    assert r["releases"]["policy"] == [{"policy": "eu", "count": 1}]
    assert r["denials"]["device"] == [{"device": "d2", "count": 2}]
    assert r["denials"]["policy"] == [{"policy": "eu", "count": 1}, {"policy": "(no rule matched)", "count": 1}]
    assert r["top_denial_reasons"][0] == {"reason": "region us-east-1 not allowed", "count": 2}
    assert r["keys_by_state"] == {"active": 1, "suspended": 1}
    assert r["devices_by_status"] == {"revoked": 1, "active": 1}
    assert r["approvals"] == {"requested": 1, "expired": 1}
    assert r["key_ages"][0]["age_days"] == 59.0


def test_csv_cells_cannot_become_formulas():
    r = reports.build(RECORDS, tenant_id="t1", since=None, until=None, now=NOW)
    rows = list(csv.reader(io.StringIO(reports.to_csv(r))))
    assert rows[0] == ["section", "dimension", "value", "count"]
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_html_is_self_contained_and_escaped():
    page = reports.to_html(reports.build(RECORDS, tenant_id="t<1>", since=None, until=None, now=NOW))
    assert "<script" not in page and "t&lt;1&gt;" in page and "=HYPERLINK(&quot;" in page
    assert "<svg" in page and " src=" not in page and " href=" not in page  # nothing loads from elsewhere
    assert "default-src 'none'" in page
