"""Compliance reports from audit records alone: a pure fold over a tenant's records in a time range,
rendered as JSON, CSV or a self-contained HTML page with inline SVG charts (no scripts, no links).

Ids are shown with names: a device's from its ``device.enrolled`` record, a key's from
``key.created`` and a policy's from ``policy.updated``, all audit records themselves (the handler
feeds the naming records from before the range through `learn`). A decision names its deciding
rules in ``decided_by`` as ``{"policy": <policy id>, "version", "rule"}``; a release is counted
for the policy that decided its request. Releases and denials are also bucketed per hour and day."""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from shared import report_charts

NAMED = {"device.enrolled": "device", "key.created": "key", "policy.updated": "policy"}



class ReportBuilder:
    """Feed records in sequence order with `add`; `result` gives the report."""

    def __init__(self, *, tenant_id: str, since: str | None, until: str | None, now: datetime):
        self.tenant_id, self.since, self.until, self.now = tenant_id, since, until, now
        self.records = 0
        self.by_action: Counter[str] = Counter()
        self.releases = {"device": Counter(), "key": Counter(), "policy": Counter()}
        self.denials = {"device": Counter(), "key": Counter(), "policy": Counter()}
        self.reasons: Counter[str] = Counter()
        self.refusals: Counter[str] = Counter()
        self.approvals: Counter[str] = Counter()
        self.keys: dict[str, dict[str, Any]] = {}
        self.devices: dict[str, dict[str, Any]] = {}
        self.names: dict[str, dict[str, str]] = {"device": {}, "key": {}, "policy": {}}
        self.trends: dict[str, dict[str, Counter[str]]] = {
            "hour": {"releases": Counter(), "denials": Counter()},
            "day": {"releases": Counter(), "denials": Counter()}}
        self._policy_of_request: dict[str, str] = {}

    def learn(self, record: Mapping[str, Any]) -> None:
        """Remember the name a naming record gives its resource (the latest one wins)."""
        kind = NAMED.get(str(record.get("action")))
        rid = (record.get("resource") or {}).get("id")
        name = (record.get("details") or {}).get("name")
        if kind and rid and name:
            self.names[kind][str(rid)] = str(name)

    def add(self, record: Mapping[str, Any]) -> None:
        self.records += 1
        action = str(record.get("action"))
        self.by_action[action] += 1
        self.learn(record)
        details = record.get("details") or {}
        resource = record.get("resource") or {}
        if action == "key.decided":
            self._decided(record, details, resource)
        elif action == "key.released":
            self._count(self.releases, "releases", record, details.get("device_id"), resource.get("id"),
                        self._policy_of_request.get(details.get("request_id")) or "(unknown policy)")
        elif action == "key.release_refused":
            self.refusals[str(details.get("status") or "error")] += 1
        elif action.startswith("approval."):
            self.approvals[action.split(".", 1)[1]] += 1
        if resource.get("type") == "key" and resource.get("id"):
            key = self.keys.setdefault(resource["id"], {"key_id": resource["id"], "state": None, "created": None})
            if action == "key.created":
                key["created"] = record.get("time")
                key["state"] = key["state"] or "active"
                key["name"] = details.get("name")
            elif action == "key.state_changed":
                key["state"] = details.get("to_state")
            elif action == "key.destroyed":
                key["state"] = "destroyed"
        if resource.get("type") == "device" and resource.get("id"):
            dev = self.devices.setdefault(resource["id"], {"device_id": resource["id"], "status": None, "posture": None})
            if action == "device.enrolled":
                dev["status"] = "active"
            elif action == "device.revoked":
                dev["status"] = "revoked"
            if details.get("posture") is not None:
                dev["posture"] = details["posture"]

    def _decided(self, record: Mapping[str, Any], details: Mapping[str, Any], resource: Mapping[str, Any]) -> None:
        policy = policy_of(details)
        request_id = details.get("request_id")
        if request_id and policy:
            self._policy_of_request[request_id] = policy
        if record.get("outcome") == "denied":
            self._count(self.denials, "denials", record, details.get("device_id"), resource.get("id"),
                        policy or "(no rule matched)")
            for reason in record.get("reasons") or ["(no reason given)"]:
                self.reasons[str(reason)] += 1

    def _count(self, counters: dict[str, Counter[str]], trend: str, record: Mapping[str, Any],
               device: Any, key: Any, policy: str) -> None:
        counters["device"][str(device or "(unknown device)")] += 1
        counters["key"][str(key or "(unknown key)")] += 1
        counters["policy"][policy] += 1
        for size, bucket in buckets(str(record.get("time") or "")).items():
            self.trends[size][trend][bucket] += 1

    def _rows(self, counter: Counter[str], name: str) -> list[dict[str, Any]]:
        if name not in self.names:
            return [{name: k, "count": v} for k, v in counter.most_common()]
        names = self.names[name]
        return [{name: k, "name": names.get(k), "count": v} for k, v in counter.most_common()]

    def _trend(self, size: str) -> list[dict[str, Any]]:
        counts = self.trends[size]
        return [{"bucket": b, "releases": counts["releases"][b], "denials": counts["denials"][b]}
                for b in sorted(set(counts["releases"]) | set(counts["denials"]))]

    def result(self) -> dict[str, Any]:
        rows = self._rows

        keys_by_state = Counter(k["state"] or "unknown" for k in self.keys.values())
        ages = []
        for key in self.keys.values():
            if key.get("created"):
                created = datetime.fromisoformat(str(key["created"]).replace("Z", "+00:00"))
                ages.append({"key_id": key["key_id"], "name": key.get("name"), "state": key["state"],
                             "age_days": round((self.now - created).total_seconds() / 86400, 2)})
        return {
            "tenant_id": self.tenant_id, "since": self.since, "until": self.until,
            "generated_at": self.now.isoformat(), "records": self.records,
            "totals": {"releases": sum(self.releases["key"].values()), "denials": sum(self.denials["key"].values()),
                       "refusals": sum(self.refusals.values())},
            "trends": {"hour": self._trend("hour"), "day": self._trend("day")},
            "releases": {by: rows(c, by) for by, c in self.releases.items()},
            "denials": {by: rows(c, by) for by, c in self.denials.items()},
            "top_denial_reasons": rows(self.reasons, "reason")[:10],
            "release_refusals": rows(self.refusals, "status"),
            "approvals": dict(self.approvals),
            "keys_by_state": dict(keys_by_state),
            "key_ages": sorted(ages, key=lambda a: -a["age_days"]),
            "devices_by_status": dict(Counter(d["status"] or "unknown" for d in self.devices.values())),
            "devices_by_posture": dict(Counter(str(d["posture"]) for d in self.devices.values() if d["posture"])),
            "events_by_action": dict(self.by_action.most_common()),
        }


def policy_of(details: Mapping[str, Any]) -> str | None:
    """The id of the first policy among a decision's deciding rules (``decided_by[].policy``)."""
    for entry in details.get("decided_by") or []:
        if isinstance(entry, Mapping) and entry.get("policy"):
            return str(entry["policy"])
    return None


def buckets(time: str) -> dict[str, str]:
    """The hour and day a record's RFC 3339 UTC time falls in (``2025-01-01 04:00``, ``2025-01-01``)."""
    if len(time) < 13:
        return {}
    return {"hour": f"{time[:10]} {time[11:13]}:00", "day": time[:10]}


def build(records: Iterable[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
    builder = ReportBuilder(**kwargs)
    for record in records:
        builder.add(record)
    return builder.result()


def to_csv(report: Mapping[str, Any]) -> str:
    """Long format, one fact per row: section, dimension, value, name, count. `name` is the
    device's, key's or policy's name beside its id in `value` (empty where there is none)."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "dimension", "value", "name", "count"])
    for section in ("releases", "denials"):
        for dim, rows in report[section].items():
            for row in rows:
                writer.writerow([section, dim, _safe_cell(row[dim]), _safe_cell(row.get("name") or ""), row["count"]])
    for row in report["top_denial_reasons"]:
        writer.writerow(["top_denial_reasons", "reason", _safe_cell(row["reason"]), "", row["count"]])
    for size, rows in (report.get("trends") or {}).items():
        for row in rows:
            for kind in ("releases", "denials"):
                writer.writerow([f"{kind}_per_{size}", size, row["bucket"], "", row[kind]])
    for name in ("approvals", "keys_by_state", "devices_by_status", "devices_by_posture", "events_by_action"):
        for value, count in report[name].items():
            writer.writerow([name, name.split("_by_")[-1], _safe_cell(value), "", count])
    return out.getvalue()


def _safe_cell(value: Any) -> str:
    # SECURITY: a cell starting with = + - @ is a formula to spreadsheet software (CSV injection).
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def to_html(report: Mapping[str, Any]) -> str:
    """One page, no scripts or external resources; every value is HTML-escaped."""
    sections = "".join(f"<h3>{html.escape(title)}</h3>{svg or '<p class=none>none</p>'}"
                       for title, svg in report_charts.sections(report))
    ages = "".join(f"<tr><td>{html.escape(str(a['key_id']))}</td><td>{html.escape(str(a.get('name') or ''))}</td>"
                   f"<td>{html.escape(str(a['state']))}</td><td>{a['age_days']}</td></tr>" for a in report["key_ages"][:50])
    totals = report["totals"]
    esc = html.escape
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'\">"
        f"<title>Strongroom audit report {esc(str(report['tenant_id']))}</title>"
        "<style>body{font-family:sans-serif;margin:2em;max-width:60em}td,th{padding:2px 8px;text-align:left}"
        ".none{color:#777}</style></head><body>"
        f"<h1>Audit report</h1><p>Tenant {esc(str(report['tenant_id']))}; from {esc(str(report['since'] or 'the start'))} "
        f"to {esc(str(report['until'] or 'now'))}; {report['records']} records; generated {esc(str(report['generated_at']))}.</p>"
        f"<p><b>{totals['releases']}</b> releases, <b>{totals['denials']}</b> denials, "
        f"<b>{totals['refusals']}</b> refusals by key custody.</p>"
        + sections
        + "<h3>Key ages</h3><table><tr><th>key</th><th>name</th><th>state</th><th>age (days)</th></tr>"
        + ages + "</table></body></html>"
    )
