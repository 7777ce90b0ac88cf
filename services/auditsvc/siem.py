"""Export formatters of audit records: CEF, LEEF 2.0, RFC 5424 syslog, OCSF-style JSON lines, chained records.

Every format is a single line: CR/LF in values are escaped or replaced, because a collector that
splits on newlines would otherwise accept a forged second event smuggled in a field (log injection).
Every record field reaches every format; docs/siem-mapping.md has the table (a unit test keeps it
true). The free-form fields (reasons, trace, details) travel as compact JSON, so operator text
with line breaks survives even RFC 5424, which has no escape for them.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.signatures import canonical_bytes

VENDOR = "Strongroom"
PRODUCT = "Strongroom"
PRODUCT_VERSION = "0.1.0"
OCSF_VERSION = "1.3.0"

# RFC 5424 §6.2.1 facility 13 is "log audit"; audit records belong there rather than in
# 10 (authpriv), which carries login chatter. Callers can pick another facility.
SYSLOG_FACILITY_LOG_AUDIT = 13
# 32473 is the Private Enterprise Number reserved for documentation (RFC 5612); a deployment
# with its own PEN passes it so the SD-ID is globally unique.
EXAMPLE_PEN = 32473

# One place decides how alarming each outcome is, for every format.
#   outcome   CEF(0-10)  LEEF sev(1-10)  syslog severity   OCSF severity_id / status_id
_SEVERITY = {
    "success": (3, 3, 6, 1, 1),   # informational
    "pending": (4, 4, 5, 1, 99),  # notice: waits on a human approver
    "failure": (6, 6, 4, 3, 2),   # warning
    "denied": (6, 6, 4, 3, 2),    # warning: policy refused a release
}
_UNKNOWN_SEVERITY = (5, 5, 5, 0, 0)


def _severity(record: Mapping[str, Any]) -> tuple[int, int, int, int, int]:
    return _SEVERITY.get(str(record.get("outcome")), _UNKNOWN_SEVERITY)


def _parse_time(value: Any) -> datetime:
    dt = datetime.fromisoformat(str(value))
    return (dt if dt.tzinfo else dt.replace(tzinfo=UTC)).astimezone(UTC)


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _epoch_ms(value: Any) -> int:
    return (_parse_time(value) - _EPOCH) // timedelta(milliseconds=1)


# Controls other than TAB/CR/LF, plus Unicode line and paragraph separators: some collectors
# split or truncate on them, so they never reach a rendered line. CR/LF are each format's job.
_UNSAFE = {c: "\ufffd" for c in [*range(0x00, 0x09), 0x0B, 0x0C, *range(0x0E, 0x20),
                                   *range(0x7F, 0xA0), 0x2028, 0x2029]}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        value = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return str(value).translate(_UNSAFE)


# JSON escapes for what _UNSAFE would replace: inside a JSON string they are lossless.
_JSON_ESCAPES = {c: f"\\u{c:04x}" for c in _UNSAFE}


def _json_text(value: Any) -> str:
    """Compact JSON; ASCII controls are escaped by json itself, C1 and U+2028/9 here."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).translate(_JSON_ESCAPES)


_STRUCTURED = ("reasons", "trace", "details")


def _structured(record: Mapping[str, Any]) -> list[tuple[str, str | None]]:
    """The free-form fields as JSON text, absent when empty (readers take absent as empty)."""
    return [(name, _json_text(record[name]) if record.get(name) else None) for name in _STRUCTURED]


def _one_line(text: str) -> str:
    return text.replace("\r\n", " ").replace("\r", " ").replace("\n", " ")


def _reasons(record: Mapping[str, Any]) -> str:
    return "; ".join(str(r) for r in record.get("reasons") or [])


def _resource_text(record: Mapping[str, Any]) -> str:
    res = record.get("resource") or {}
    return f"{res.get('type')}:{res.get('id')}" if res.get("id") is not None else str(res.get("type") or "")


def _title(action: str) -> str:
    words = action.replace(".", " ").replace("_", " ").strip()
    return words[:1].upper() + words[1:] if words else "Audit event"


def _ip(value: Any) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(str(value)) if value else None
    except ValueError:
        return None


# ---------------------------------------------------------------- CEF (ArcSight, rev. 25)

def cef_escape_header(value: Any) -> str:
    """Header fields: backslash and pipe are escaped; newlines are not allowed, so become spaces."""
    return _one_line(_text(value).replace("\\", "\\\\").replace("|", "\\|"))


def cef_escape_value(value: Any) -> str:
    """Extension values: backslash and equals are escaped, newlines spelled \\n / \\r."""
    text = _text(value).replace("\\", "\\\\").replace("=", "\\=")
    return text.replace("\r\n", "\\n").replace("\n", "\\n").replace("\r", "\\r")


def to_cef(record: Mapping[str, Any], *, product_version: str = PRODUCT_VERSION) -> str:
    """CEF:0 line; custom strings carry what CEF has no standard key for.

    rt=epoch ms, act=action, outcome, externalId=event_id, suser=actor id, cat=resource type,
    duser=target user (user events), src/c6a2=source IPv4/IPv6, msg=reasons,
    cs1 tenantId, cs2 correlationId, cs3 causationId, cs4 resource, cs5 actorKind,
    cs6 actorAuth, cn1 chainSeq, cn2 eventVersion, flexString1 chainHash, flexString2 prevHash;
    strongroomReasons/Trace/Details (custom keys, vendor-prefixed as CEF asks) as JSON.
    """
    cef_sev = _severity(record)[0]
    actor = record.get("actor") or {}
    resource = record.get("resource") or {}
    # rt goes first: some parsers find the header's end at the first "=".
    ext: list[tuple[str, Any]] = [
        ("rt", _epoch_ms(record["time"])),
        ("act", record.get("action")),
        ("outcome", record.get("outcome")),
        ("externalId", record.get("event_id")),
        ("suser", actor.get("id")),
        ("cat", resource.get("type")),
    ]
    if resource.get("type") == "user" and resource.get("id") is not None:
        ext.append(("duser", resource["id"]))
    ip = _ip(record.get("source_ip"))
    if isinstance(ip, ipaddress.IPv4Address):
        ext.append(("src", str(ip)))
    elif ip is not None:
        ext += [("c6a2Label", "Source IPv6 Address"), ("c6a2", str(ip))]
    labelled = [
        ("cs1", "tenantId", record.get("tenant_id")),
        ("cs2", "correlationId", record.get("correlation_id")),
        ("cs3", "causationId", record.get("causation_id")),
        ("cs4", "resource", _resource_text(record)),
        ("cs5", "actorKind", actor.get("kind")),
        ("cs6", "actorAuth", actor.get("auth")),
        ("cn1", "chainSeq", record.get("seq")),
        ("cn2", "eventVersion", record.get("event_version")),
        ("flexString1", "chainHash", record.get("hash")),
        ("flexString2", "prevHash", record.get("prev_hash")),
    ]
    for key, label, value in labelled:
        if value not in (None, ""):
            ext += [(f"{key}Label", label), (key, value)]
    if record.get("reasons"):
        ext.append(("msg", _reasons(record)))
    ext += [("strongroom" + name.title(), text) for name, text in _structured(record)]
    header = [
        "CEF:0", VENDOR, PRODUCT, product_version,
        record.get("action"), _title(str(record.get("action") or "")), cef_sev,
    ]
    head = "|".join(h if i == 0 else cef_escape_header(h) for i, h in enumerate(header))
    return head + "|" + " ".join(f"{k}={cef_escape_value(v)}" for k, v in ext if v not in (None, ""))


# ---------------------------------------------------------------- LEEF 2.0 (QRadar)

def leef_escape_header(value: Any) -> str:
    return _one_line(_text(value).replace("\\", "\\\\").replace("|", "\\|"))


def leef_escape_value(value: Any, delimiter: str) -> str:
    """LEEF defines no escape; backslash-escaping the delimiter keeps attributes splittable
    by parsers that honour it, and CR/LF never reach the line."""
    text = _text(value).replace("\\", "\\\\").replace(delimiter, "\\" + delimiter)
    return text.replace("\r", "\\r").replace("\n", "\\n")


def to_leef(record: Mapping[str, Any], *, delimiter: str = "^",
            product_version: str = PRODUCT_VERSION) -> str:
    """LEEF:2.0 line; the delimiter header field is written as hex (e.g. x5E) so it is unambiguous.

    Predefined keys: devTime/devTimeFormat, cat=outcome, sev, usrName=actor id, src,
    resource, isLoginEvent. Custom keys: tenantId, eventId, eventVersion, action, actorKind,
    actorAuth, resourceType, correlationId, causationId, reason (joined for reading),
    reasons/trace/details (JSON), chainSeq, prevHash, chainHash.
    """
    if len(delimiter) != 1 or delimiter in "=\\\r\n|":
        raise ValueError("LEEF delimiter must be one character other than = \\ | CR LF")
    actor = record.get("actor") or {}
    resource = record.get("resource") or {}
    dev_time = _parse_time(record["time"])
    attrs: list[tuple[str, Any]] = [
        ("devTime", dev_time.strftime("%Y-%m-%dT%H:%M:%S.") + f"{dev_time.microsecond // 1000:03d}+0000"),
        ("devTimeFormat", "yyyy-MM-dd'T'HH:mm:ss.SSSZ"),
        ("cat", record.get("outcome")),
        ("sev", _severity(record)[1]),
        ("usrName", actor.get("id")),
        ("src", _ip(record.get("source_ip"))),
        ("resource", resource.get("id")),
        ("resourceType", resource.get("type")),
        ("tenantId", record.get("tenant_id")),
        ("eventId", record.get("event_id")),
        ("action", record.get("action")),
        ("actorKind", actor.get("kind")),
        ("actorAuth", actor.get("auth")),
        ("correlationId", record.get("correlation_id")),
        ("causationId", record.get("causation_id")),
        ("reason", _reasons(record)),
        ("eventVersion", record.get("event_version")),
        ("chainSeq", record.get("seq")),
        ("prevHash", record.get("prev_hash")),
        ("chainHash", record.get("hash")),
        *_structured(record),
    ]
    if str(record.get("action", "")).startswith("user.login"):
        attrs.append(("isLoginEvent", "true"))
    header = ["LEEF:2.0", VENDOR, PRODUCT, product_version, record.get("action"),
              f"x{ord(delimiter):02X}"]
    head = "|".join(h if i == 0 else leef_escape_header(h) for i, h in enumerate(header))
    body = delimiter.join(f"{k}={leef_escape_value(v, delimiter)}" for k, v in attrs if v not in (None, ""))
    return f"{head}|{body}"


# ---------------------------------------------------------------- RFC 5424 syslog

def sd_escape(value: Any) -> str:
    """SD-PARAM value escaping (RFC 5424 §6.3.3): '"', '\\' and ']' get a backslash.

    RFC 5424 has no escape for CR/LF, so they become spaces for line-framed transports."""
    return _one_line(_text(value)).replace("\\", "\\\\").replace('"', '\\"').replace("]", "\\]")


def _header_token(value: Any, limit: int) -> str:
    """HOSTNAME/APP-NAME/PROCID/MSGID: printable US-ASCII without spaces, or the NILVALUE."""
    text = "".join(c for c in _text(value) if 33 <= ord(c) <= 126)[:limit]
    return text or "-"


def _sd_name(value: str) -> str:
    return "".join(c for c in value if 33 <= ord(c) <= 126 and c not in '= ]"')[:32]


def to_syslog(record: Mapping[str, Any], *, hostname: str = "-", app_name: str = "strongroom-audit",
              procid: str = "-", facility: int = SYSLOG_FACILITY_LOG_AUDIT,
              pen: int = EXAMPLE_PEN) -> str:
    """RFC 5424 line: PRI from facility and outcome, MSGID=action, one strongroom@PEN SD element."""
    if not 0 <= facility <= 23:
        raise ValueError("syslog facility is 0..23")
    severity = _severity(record)[2]
    ts = _parse_time(record["time"]).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    actor = record.get("actor") or {}
    resource = record.get("resource") or {}
    params = [
        ("tenant", record.get("tenant_id")),
        ("eventId", record.get("event_id")),
        ("eventVersion", record.get("event_version")),
        ("action", record.get("action")),  # MSGID holds at most 32 printable characters
        ("outcome", record.get("outcome")),
        ("actorKind", actor.get("kind")),
        ("actor", actor.get("id")),
        ("auth", actor.get("auth")),
        ("resourceType", resource.get("type")),
        ("resource", resource.get("id")),
        ("src", record.get("source_ip")),
        ("correlationId", record.get("correlation_id")),
        ("causationId", record.get("causation_id")),
        ("seq", record.get("seq")),
        ("prevHash", record.get("prev_hash")),
        ("hash", record.get("hash")),
        *_structured(record),
    ]
    sd_id = _sd_name(f"strongroom@{int(pen)}")
    sd = "[" + sd_id + "".join(f' {_sd_name(k)}="{sd_escape(v)}"'
                               for k, v in params if v not in (None, "")) + "]"
    msg = f"{record.get('action')} {_resource_text(record)} by {actor.get('kind')}:{actor.get('id')}" \
          f" -> {record.get('outcome')}"
    if record.get("reasons"):
        msg += ": " + _reasons(record)
    msg = _one_line(_text(msg))
    if not msg.isascii():
        msg = "\ufeff" + msg  # §6.4: a UTF-8 MSG starts with a BOM; pure ASCII needs none
    header = " ".join([
        f"<{facility * 8 + severity}>1", ts, _header_token(hostname, 255), _header_token(app_name, 48),
        _header_token(procid, 128), _header_token(record.get("action"), 32),
    ])
    return f"{header} {sd} {msg}"


def frame_octet_counted(msg: str) -> bytes:
    """RFC 6587 §3.4.1 / RFC 5425 framing: "<octet count> <message>" over the UTF-8 bytes."""
    data = msg.encode("utf-8")
    return str(len(data)).encode("ascii") + b" " + data


# ---------------------------------------------------------------- OCSF-style JSON lines

#  record field          OCSF attribute
#  -------------------   -------------------------------------------------------------
#  action                class by noun: user.login*/logout -> Authentication (3002);
#                        device/policy/tenant/user.* -> Entity Management (3004);
#                        key/approval/other -> API Activity (6003); activity_id from the verb;
#                        also api.operation
#  time                  time (epoch ms) and time_dt (RFC 3339, full precision)
#  outcome               status / status_id (1 Success, 2 Failure, 99 Other), severity_id
#  reasons               status_detail (joined) and unmapped.reasons (the list)
#  event_id              metadata.uid; event_version -> unmapped.event_version
#  tenant_id             metadata.tenant_uid
#  correlation_id        metadata.correlation_uid
#  seq / hash            metadata.sequence / unmapped.chain
#  actor {kind,id,auth}  actor.user {uid, type}; auth -> unmapped.auth
#  resource              entity (3004) or resources[0] (6003, 3002) as {uid, type}
#  source_ip             src_endpoint.ip
#  details, trace, causation_id   unmapped.*
_CLASSES = {
    3002: ("Authentication", 3, "Identity & Access Management"),
    3004: ("Entity Management", 3, "Identity & Access Management"),
    6003: ("API Activity", 6, "Application Activity"),
}
_ACTIVITIES: dict[int, dict[str, tuple[int, str]]] = {
    3002: {"login": (1, "Logon"), "logout": (2, "Logoff")},
    3004: {"created": (1, "Create"), "read": (2, "Read"), "updated": (3, "Update"),
           "deleted": (4, "Delete"), "enrolled": (6, "Enroll"), "unenrolled": (7, "Unenroll"),
           "enabled": (8, "Enable"), "disabled": (9, "Disable"), "activated": (10, "Activate"),
           "deactivated": (11, "Deactivate"), "suspended": (12, "Suspend"), "resumed": (13, "Resume")},
    6003: {"created": (1, "Create"), "released": (2, "Read"), "read": (2, "Read"),
           "updated": (3, "Update"), "rotated": (3, "Update"), "deleted": (4, "Delete"),
           "destroyed": (4, "Delete")},
}


def _ocsf_class(action: str) -> tuple[int, int, str]:
    noun, _, verb = action.partition(".")
    if noun == "user" and (verb.startswith("login") or verb.startswith("logout")):
        class_uid = 3002
        verb = "login" if verb.startswith("login") else "logout"
    elif noun in ("device", "policy", "tenant", "user"):
        class_uid = 3004
    else:
        class_uid = 6003
    activity_id, activity_name = _ACTIVITIES[class_uid].get(verb, (99, "Other"))
    return class_uid, activity_id, activity_name


def to_ocsf(record: Mapping[str, Any], *, product_version: str = PRODUCT_VERSION) -> dict[str, Any]:
    """OCSF-style object (see the table above); a mapping, not a schema-validated event."""
    class_uid, activity_id, activity_name = _ocsf_class(str(record.get("action") or ""))
    class_name, category_uid, category_name = _CLASSES[class_uid]
    _, _, _, severity_id, status_id = _severity(record)
    actor = record.get("actor") or {}
    resource = record.get("resource") or {}
    target = {"uid": resource.get("id"), "type": resource.get("type")}
    event: dict[str, Any] = {
        "class_uid": class_uid,
        "class_name": class_name,
        "category_uid": category_uid,
        "category_name": category_name,
        "activity_id": activity_id,
        "activity_name": activity_name,
        "type_uid": class_uid * 100 + activity_id,
        "time": _epoch_ms(record["time"]),
        "time_dt": _parse_time(record["time"]).isoformat(timespec="microseconds").replace("+00:00", "Z"),
        "severity_id": severity_id,
        "status_id": status_id,
        "status": str(record.get("outcome")),
        "status_detail": _reasons(record) or None,
        "message": f"{record.get('action')} {_resource_text(record)}".strip(),
        "metadata": {
            "version": OCSF_VERSION,
            "product": {"name": PRODUCT, "vendor_name": VENDOR, "version": product_version},
            "uid": record.get("event_id"),
            "tenant_uid": record.get("tenant_id"),
            "correlation_uid": record.get("correlation_id"),
            "sequence": record.get("seq"),
        },
        "actor": {"user": {"uid": actor.get("id"), "type": actor.get("kind")}},
        "api": {"operation": record.get("action")},
        "unmapped": {
            "auth": actor.get("auth"),
            "event_version": record.get("event_version"),
            "causation_id": record.get("causation_id"),
            "reasons": list(record.get("reasons") or []),
            "trace": record.get("trace") or [],
            "details": record.get("details") or {},
            "chain": {"seq": record.get("seq"), "prev_hash": record.get("prev_hash"),
                      "hash": record.get("hash")},
        },
    }
    if class_uid == 3004:
        event["entity"] = target
    else:
        event["resources"] = [target]
    if record.get("source_ip"):
        event["src_endpoint"] = {"ip": record["source_ip"]}
    return event


def to_jsonl(record: Mapping[str, Any]) -> str:
    """One compact JSON object per line.

    ASCII-only output: json escapes controls, and \\u-escaping U+2028/U+2029 too keeps
    splitters that treat them as line breaks from seeing two lines."""
    return json.dumps(to_ocsf(record), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def to_record_line(record: Mapping[str, Any]) -> str:
    """The chained record itself, in the bytes its hash covers (verifiable offline)."""
    return canonical_bytes(record).decode("utf-8")


# Every format of shared/export_formats.py, by name; a unit test keeps the two sets equal.
FORMATTERS: dict[str, Callable[..., str]] = {
    "cef": to_cef, "leef": to_leef, "syslog": to_syslog, "jsonl": to_jsonl, "records": to_record_line,
}


def render(record: Mapping[str, Any], fmt: str, **options: Any) -> str:
    """Render one record in a named export format; options go to that format's formatter."""
    try:
        formatter = FORMATTERS[fmt]
    except KeyError:
        raise ValueError(f"unknown export format {fmt!r}; expected one of {sorted(FORMATTERS)}") from None
    return formatter(record, **options)
