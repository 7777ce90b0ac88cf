"""Reports: the fold over records, and CSV/HTML rendering that neutralises formulas and markup."""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from datetime import UTC, datetime

from services.auditsvc import reports
from shared import report_charts

NOW = datetime(2025, 3, 1, tzinfo=UTC)


def rec(action, resource, outcome="success", reasons=(), time="2025-01-01T00:00:00Z", **details):
    rtype, rid = resource
    return {"action": action, "resource": {"type": rtype, "id": rid}, "outcome": outcome,
            "reasons": list(reasons), "details": details, "time": time}


# A decision's deciding rules, as policysvc's decision record and the key.decided event carry them.
EU_RULE = [{"policy": "pol-1", "version": 2, "rule": "eu-only"}]
LONG_REASON = ("rule eu-only: identity.region expected one of ['eu-west-1', 'eu-central-1'] "
               "but the device reported 'us-east-1' from its attested instance metadata")


RECORDS = [
    rec("key.created", ("key", "k1"), name="payroll"),
    rec("key.created", ("key", "k2"), name="=HYPERLINK(\"http://x\")"),
    rec("key.state_changed", ("key", "k2"), to_state="suspended"),
    rec("policy.updated", ("policy", "pol-1"), name="eu data stays in eu", policy_version=2),
    rec("device.enrolled", ("device", "d1"), name="web-01"),
    rec("device.enrolled", ("device", "<script>alert(1)</script>")),
    rec("device.revoked", ("device", "d1")),
    rec("key.decided", ("key", "k1"), device_id="d1", request_id="r1", decided_by=EU_RULE),
    rec("key.released", ("key", "k1"), device_id="d1", request_id="r1", time="2025-01-01T04:10:00Z"),
    rec("key.decided", ("key", "k1"), "denied", ["region us-east-1 not allowed"], device_id="d2", request_id="r2",
        decided_by=EU_RULE, time="2025-01-02T05:00:00Z"),
    rec("key.decided", ("key", "k2"), "denied", ["region us-east-1 not allowed", "firewall off"], device_id="d2",
        request_id="r3"),
    rec("approval.requested", ("approval", "a1")),
    rec("approval.expired", ("approval", "a1")),
]


def test_report_counts_releases_denials_reasons_keys_and_devices():
    r = reports.build(RECORDS, tenant_id="t1", since=None, until=None, now=NOW)
    assert r["totals"] == {"releases": 1, "denials": 2, "refusals": 0}
    assert r["releases"]["policy"] == [{"policy": "pol-1", "name": "eu data stays in eu", "count": 1}]
    assert r["releases"]["device"] == [{"device": "d1", "name": "web-01", "count": 1}]
    assert r["releases"]["key"] == [{"key": "k1", "name": "payroll", "count": 1}]
    assert r["denials"]["device"] == [{"device": "d2", "name": None, "count": 2}]
    assert r["denials"]["policy"] == [{"policy": "pol-1", "name": "eu data stays in eu", "count": 1},
                                      {"policy": "(no rule matched)", "name": None, "count": 1}]
    assert r["top_denial_reasons"][0] == {"reason": "region us-east-1 not allowed", "count": 2}
    assert r["keys_by_state"] == {"active": 1, "suspended": 1}
    assert r["devices_by_status"] == {"revoked": 1, "active": 1}
    assert r["approvals"] == {"requested": 1, "expired": 1}
    assert r["key_ages"][0]["age_days"] == 59.0


def test_csv_cells_cannot_become_formulas():
    r = reports.build(RECORDS, tenant_id="t1", since=None, until=None, now=NOW)
    rows = list(csv.reader(io.StringIO(reports.to_csv(r))))
    assert rows[0] == ["section", "dimension", "value", "name", "count"]
    assert not any(cell.startswith(("=", "+", "-", "@")) for row in rows for cell in row)


def test_csv_rows_name_devices_keys_and_policies_beside_their_ids():
    r = reports.build(RECORDS, tenant_id="t1", since=None, until=None, now=NOW)
    rows = list(csv.reader(io.StringIO(reports.to_csv(r))))
    assert ["releases", "device", "d1", "web-01", "1"] in rows
    assert ["releases", "key", "k1", "payroll", "1"] in rows
    assert ["releases", "policy", "pol-1", "eu data stays in eu", "1"] in rows
    assert ["denials", "device", "d2", "", "2"] in rows  # no enrolment record: no name
    assert ["denials", "key", "k2", "'=HYPERLINK(\"http://x\")", "1"] in rows  # a name is no formula either
    assert all(len(row) == 5 for row in rows)


def test_html_is_self_contained_and_escaped():
    page = reports.to_html(reports.build(RECORDS, tenant_id="t<1>", since=None, until=None, now=NOW))
    assert "<script" not in page and "t&lt;1&gt;" in page and "=HYPERLINK(&quot;" in page
    assert "<svg" in page and " src=" not in page and " href=" not in page  # nothing loads from elsewhere
    assert "default-src 'none'" in page


def test_names_learned_before_the_range_name_what_it_shows():
    builder = reports.ReportBuilder(tenant_id="t1", since="2025-01-01T00:00:00Z", until=None, now=NOW)
    builder.learn(rec("policy.updated", ("policy", "pol-1"), name="eu only"))
    builder.learn(rec("key.created", ("key", "k1"), name="payroll"))
    builder.add(rec("key.decided", ("key", "k1"), device_id="d1", request_id="r1", decided_by=EU_RULE))
    builder.add(rec("key.released", ("key", "k1"), device_id="d1", request_id="r1"))
    r = builder.result()
    assert r["records"] == 2 and r["releases"]["policy"][0]["name"] == "eu only"
    assert r["releases"]["key"][0]["name"] == "payroll"


def test_trends_bucket_releases_and_denials_per_hour_and_day():
    r = reports.build(RECORDS, tenant_id="t1", since=None, until=None, now=NOW)
    assert r["trends"]["hour"] == [
        {"bucket": "2025-01-01 00:00", "releases": 0, "denials": 1},
        {"bucket": "2025-01-01 04:00", "releases": 1, "denials": 0},
        {"bucket": "2025-01-02 05:00", "releases": 0, "denials": 1}]
    assert r["trends"]["day"] == [{"bucket": "2025-01-01", "releases": 1, "denials": 1},
                                  {"bucket": "2025-01-02", "releases": 0, "denials": 1}]


def _charts(page):
    return [ET.fromstring(m) for m in re.findall(r"<svg.*?</svg>", page, re.S)]


def test_html_shows_policy_names_whole_reasons_and_counts_inside_the_view_box():
    records = [*RECORDS] + [
        rec("key.decided", ("key", "k1"), "denied", [LONG_REASON], device_id="d1", request_id=f"x{i}",
            decided_by=EU_RULE) for i in range(1234)]
    page = reports.to_html(reports.build(records, tenant_id="t1", since=None, until=None, now=NOW))
    charts = _charts(page)
    text = " ".join(" ".join(t.strip() for t in svg.itertext()) for svg in charts)
    assert "eu data stays in eu (pol-1)" in text and "web-01 (d1)" in text and "payroll (k1)" in text
    assert "?" not in text.replace(LONG_REASON, "")
    reasons = next(svg for svg in charts if svg.get("aria-label") == "Top denial reasons")
    assert LONG_REASON in " ".join(s.text for s in reasons.iter("{http://www.w3.org/2000/svg}tspan"))
    for svg in charts:
        assert "style" not in ET.tostring(svg, encoding="unicode")
        width = float(svg.get("viewBox").split()[2])
        for rect in svg.iter("{http://www.w3.org/2000/svg}rect"):
            assert float(rect.get("x")) + float(rect.get("width")) <= width
        for t in svg.iter("{http://www.w3.org/2000/svg}text"):
            for line in [t, *t]:
                if (line.text or "").strip():
                    x = float(line.get("x") or t.get("x"))
                    assert x + len(line.text) * report_charts.CHAR_WIDTH <= width, line.text
    assert "1235" in text  # the count of the longest bar is drawn, not clipped


def test_long_labels_wrap_onto_lines_that_join_back_to_the_whole_label():
    svg = ET.fromstring(report_charts.bars("Reasons", [(LONG_REASON, 3)]))
    spans = [s.text for s in svg.iter("{http://www.w3.org/2000/svg}tspan")]
    assert len(spans) > 1 and " ".join(spans) == LONG_REASON
