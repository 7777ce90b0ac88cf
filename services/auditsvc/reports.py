"""Compliance reports from audit records alone: a pure fold over a tenant's records in a time range,
rendered as JSON, CSV or a self-contained HTML page with inline SVG charts (no scripts, no links)."""

from __future__ import annotations

import csv
import html
import io
from collections import Counter
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any


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
        self._policy_of_request: dict[str, str] = {}

    def add(self, record: Mapping[str, Any]) -> None:
        self.records += 1
        action = str(record.get("action"))
        self.by_action[action] += 1
        details = record.get("details") or {}
        resource = record.get("resource") or {}
        if action == "key.decided":
            policy = _policy(details)
            request_id = details.get("request_id")
            if request_id and policy:
                self._policy_of_request[request_id] = policy
            if record.get("outcome") == "denied":
                self.denials["device"][details.get("device_id") or "?"] += 1
                self.denials["key"][resource.get("id") or "?"] += 1
                self.denials["policy"][policy or "(no rule matched)"] += 1
                for reason in record.get("reasons") or ["(no reason given)"]:
                    self.reasons[str(reason)] += 1
        elif action == "key.released":
            self.releases["device"][details.get("device_id") or "?"] += 1
            self.releases["key"][resource.get("id") or "?"] += 1
            self.releases["policy"][self._policy_of_request.get(details.get("request_id"), "?")] += 1
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

    def result(self) -> dict[str, Any]:
        def rows(counter: Counter[str], name: str) -> list[dict[str, Any]]:
            return [{name: k, "count": v} for k, v in counter.most_common()]

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


def _policy(details: Mapping[str, Any]) -> str | None:
    for entry in details.get("decided_by") or []:
        if isinstance(entry, Mapping):
            for field in ("policy_name", "policy_id", "name"):
                if entry.get(field):
                    return str(entry[field])
    return None


def build(records: Iterable[Mapping[str, Any]], **kwargs: Any) -> dict[str, Any]:
    builder = ReportBuilder(**kwargs)
    for record in records:
        builder.add(record)
    return builder.result()


def to_csv(report: Mapping[str, Any]) -> str:
    """Long format, one fact per row: section, dimension, value, count."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["section", "dimension", "value", "count"])
    for section in ("releases", "denials"):
        for dim, rows in report[section].items():
            for row in rows:
                writer.writerow([section, dim, _safe_cell(row[dim]), row["count"]])
    for row in report["top_denial_reasons"]:
        writer.writerow(["top_denial_reasons", "reason", _safe_cell(row["reason"]), row["count"]])
    for name in ("approvals", "keys_by_state", "devices_by_status", "devices_by_posture", "events_by_action"):
        for value, count in report[name].items():
            writer.writerow([name, name.split("_by_")[-1], _safe_cell(value), count])
    return out.getvalue()


def _safe_cell(value: Any) -> str:
    # SECURITY: a cell starting with = + - @ is a formula to spreadsheet software (CSV injection).
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def _bars(title: str, rows: list[tuple[str, int]]) -> str:
    if not rows:
        return f"<h3>{html.escape(title)}</h3><p class=none>none</p>"
    top = max(c for _, c in rows) or 1
    height = 22 * len(rows) + 4
    parts = [f'<h3>{html.escape(title)}</h3><svg role="img" aria-label="{html.escape(title)}" width="640" '
             f'height="{height}" xmlns="http://www.w3.org/2000/svg">']
    for i, (label, count) in enumerate(rows):
        width = int(380 * count / top)
        y = 22 * i + 2
        parts.append(f'<text x="0" y="{y + 15}" font-size="12">{html.escape(label[:40])}</text>'
                     f'<rect x="250" y="{y}" width="{width}" height="18" fill="#3b6ea5"/>'
                     f'<text x="{255 + width}" y="{y + 15}" font-size="12">{count}</text>')
    parts.append("</svg>")
    return "".join(parts)


def to_html(report: Mapping[str, Any]) -> str:
    """One page, no scripts or external resources; every value is HTML-escaped."""
    def counted(rows: list[dict[str, Any]], key: str) -> list[tuple[str, int]]:
        return [(str(r[key]), int(r["count"])) for r in rows[:15]]

    sections = [
        _bars("Releases by device", counted(report["releases"]["device"], "device")),
        _bars("Releases by key", counted(report["releases"]["key"], "key")),
        _bars("Releases by policy", counted(report["releases"]["policy"], "policy")),
        _bars("Denials by device", counted(report["denials"]["device"], "device")),
        _bars("Denials by key", counted(report["denials"]["key"], "key")),
        _bars("Denials by policy", counted(report["denials"]["policy"], "policy")),
        _bars("Top denial reasons", counted(report["top_denial_reasons"], "reason")),
        _bars("Approvals", list(report["approvals"].items())),
        _bars("Keys by state", list(report["keys_by_state"].items())),
        _bars("Devices by status", list(report["devices_by_status"].items())),
        _bars("Devices by posture", list(report["devices_by_posture"].items())),
    ]
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
        + "".join(sections)
        + "<h3>Key ages</h3><table><tr><th>key</th><th>name</th><th>state</th><th>age (days)</th></tr>"
        + ages + "</table></body></html>"
    )
