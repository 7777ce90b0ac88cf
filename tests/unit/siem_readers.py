"""Independent readers of the SIEM formats: each turns one exported line back into an audit record.

Written from the specs, not from services/auditsvc/siem.py: CEF through pycef, LEEF 2.0 and
RFC 5424 by small strict parsers below, JSON lines through json. The record they rebuild uses the
keys docs/siem-mapping.md names, so a field the mapping drops comes back missing.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pycef

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Malformed(ValueError):
    """A line that breaks its format's grammar."""


def _single_line(line: str) -> None:
    if "\n" in line or "\r" in line:
        raise Malformed("a raw line break splits the message")


def _unescape(value: str, extra: dict[str, str]) -> str:
    """Backslash escapes as CEF extensions and LEEF values use them: \\n and \\r are line breaks."""
    def one(m: re.Match[str]) -> str:
        return {"n": "\n", "r": "\r", **extra}.get(m.group(1), m.group(1))
    if re.search(r"(?<!\\)(?:\\\\)*\\$", value):
        raise Malformed(f"dangling backslash in {value!r}")
    return re.sub(r"\\(.)", one, value, flags=re.S)


def _json_or(raw: str | None, empty):
    return empty if raw is None else json.loads(raw)


def _int_or_none(raw: str | None) -> int | None:
    return None if raw is None else int(raw)


def _ms(raw: str) -> datetime:
    return _EPOCH + timedelta(milliseconds=int(raw))


# ------------------------------------------------------------------ CEF (pycef)

def read_cef(line: str) -> tuple[dict, dict]:
    """pycef's parse (custom labels applied), values unescaped; returns (fields, record)."""
    _single_line(line)
    parsed = pycef.parse(line)
    if parsed is None:
        raise Malformed(line)
    f = {k: _unescape(v, {}) for k, v in parsed.items()}
    res_type, colon, res_id = (f.get("resource") or "").partition(":")
    record = {
        "tenant_id": f.get("tenantId"),
        "event_id": f.get("externalId"),
        "event_version": _int_or_none(f.get("eventVersion")),
        "time": _ms(f["rt"]),
        "actor": {"kind": f.get("actorKind"), "id": f.get("suser"), "auth": f.get("actorAuth")},
        "action": f.get("act"),
        "resource": {"type": f.get("cat"), "id": res_id if colon else None},
        "outcome": f.get("outcome"),
        "reasons": _json_or(f.get("strongroomReasons"), []),
        "trace": _json_or(f.get("strongroomTrace"), []),
        "correlation_id": f.get("correlationId"),
        "causation_id": f.get("causationId"),
        "source_ip": f.get("src") or f.get("Source IPv6 Address"),
        "details": _json_or(f.get("strongroomDetails"), {}),
        "seq": _int_or_none(f.get("chainSeq")),
        "prev_hash": f.get("prevHash"),
        "hash": f.get("chainHash"),
    }
    return f, record


# ------------------------------------------------------------------ LEEF 2.0

def _leef_header(line: str) -> tuple[list[str], int]:
    """The six header fields (backslash escapes honoured) and where the attributes start."""
    fields, buf, i = [], "", 0
    while len(fields) < 6:
        if i >= len(line):
            raise Malformed("LEEF header ends early")
        ch = line[i]
        if ch == "\\" and i + 1 < len(line):
            buf, i = buf + line[i + 1], i + 2
            continue
        if ch == "|":
            fields.append(buf)
            buf = ""
        else:
            buf += ch
        i += 1
    return fields, i


def parse_leef(line: str) -> tuple[list[str], dict[str, str]]:
    """LEEF:2.0|Vendor|Product|Version|EventID|Delimiter|key=value<delim>key=value..."""
    _single_line(line)
    header, start = _leef_header(line)
    if header[0] != "LEEF:2.0":
        raise Malformed(f"not LEEF 2.0: {header[0]!r}")
    spec = header[5]
    if re.fullmatch(r"(?:0x|x)[0-9A-Fa-f]{2,4}", spec):
        delim = chr(int(spec.split("x")[1], 16))
    elif len(spec) == 1:
        delim = spec
    else:
        raise Malformed(f"bad delimiter {spec!r}")
    attrs: dict[str, str] = {}
    # Split on the delimiter where it is not backslash-escaped (an escaped backslash is a pair).
    body, buf, items, i = line[start:], "", [], 0
    while i < len(body):
        if body[i] == "\\" and i + 1 < len(body):
            buf, i = buf + body[i:i + 2], i + 2
        elif body[i] == delim:
            items, buf, i = [*items, buf], "", i + 1
        else:
            buf, i = buf + body[i], i + 1
    items.append(buf)
    for item in items:
        key, eq, raw = item.partition("=")
        if not eq or not re.fullmatch(r"[A-Za-z0-9_]+", key) or key in attrs:
            raise Malformed(f"bad LEEF attribute {item!r}")
        attrs[key] = _unescape(raw, {})
    return header, attrs


def read_leef(line: str) -> tuple[dict, dict]:
    _, a = parse_leef(line)
    record = {
        "tenant_id": a.get("tenantId"),
        "event_id": a.get("eventId"),
        "event_version": _int_or_none(a.get("eventVersion")),
        "time": datetime.strptime(a["devTime"], "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC),
        "actor": {"kind": a.get("actorKind"), "id": a.get("usrName"), "auth": a.get("actorAuth")},
        "action": a.get("action"),
        "resource": {"type": a.get("resourceType"), "id": a.get("resource")},
        "outcome": a.get("cat"),
        "reasons": _json_or(a.get("reasons"), []),
        "trace": _json_or(a.get("trace"), []),
        "correlation_id": a.get("correlationId"),
        "causation_id": a.get("causationId"),
        "source_ip": a.get("src"),
        "details": _json_or(a.get("details"), {}),
        "seq": _int_or_none(a.get("chainSeq")),
        "prev_hash": a.get("prevHash"),
        "hash": a.get("chainHash"),
    }
    return a, record


# ------------------------------------------------------------------ RFC 5424

_HEADER = re.compile(r"<(\d{1,3})>1 (\S+) (\S+) (\S+) (\S+) (\S+) ")
_SD_NAME = re.compile(r'[!#-<>-\\^-~]{1,32}')  # PRINTUSASCII except '=', SP, ']', '"'


def _sd_value(text: str, i: int) -> tuple[str, int]:
    """A quoted PARAM-VALUE from text[i] (the opening quote); only \\" \\\\ \\] are escapes."""
    if text[i:i + 1] != '"':
        raise Malformed("PARAM-VALUE must be quoted")
    out, i = [], i + 1
    while i < len(text):
        ch = text[i]
        if ch == "\\" and text[i + 1:i + 2] in ('"', "\\", "]"):
            out.append(text[i + 1])
            i += 2
        elif ch == '"':
            return "".join(out), i + 1
        elif ch == "]":
            raise Malformed("unescaped ']' in PARAM-VALUE")
        else:
            out.append(ch)
            i += 1
    raise Malformed("PARAM-VALUE not closed")


def _sd_element(text: str, i: int) -> tuple[str, dict[str, str], int]:
    m = _SD_NAME.match(text, i + 1)
    if text[i] != "[" or not m:
        raise Malformed("bad SD-ELEMENT")
    sd_id, params, i = m.group(0), {}, m.end()
    while text[i:i + 1] == " ":
        name = _SD_NAME.match(text, i + 1)
        if not name or text[name.end():name.end() + 1] != "=" or name.group(0) in params:
            raise Malformed("bad SD-PARAM")
        params[name.group(0)], i = _sd_value(text, name.end() + 1)
    if text[i:i + 1] != "]":
        raise Malformed("SD-ELEMENT not closed")
    return sd_id, params, i + 1


def parse_syslog(line: str) -> dict:
    """HEADER SP STRUCTURED-DATA [SP MSG]; returns header fields, {SD-ID: params} and MSG."""
    _single_line(line)
    m = _HEADER.match(line)
    if not m:
        raise Malformed(f"bad RFC 5424 header: {line[:80]!r}")
    pri, ts, host, app, proc, msgid = m.groups()
    sd, i = {}, m.end()
    if line[i:i + 1] == "-":
        i += 1
    while line[i:i + 1] == "[":
        sd_id, params, i = _sd_element(line, i)
        if sd_id in sd:
            raise Malformed(f"SD-ID {sd_id} twice")
        sd[sd_id] = params
    if i < len(line) and line[i] != " ":
        raise Malformed("junk after STRUCTURED-DATA")
    return {"pri": int(pri), "timestamp": ts, "hostname": host, "app_name": app, "procid": proc,
            "msgid": msgid, "sd": sd, "msg": line[i + 1:]}


def read_syslog(line: str) -> tuple[dict, dict]:
    parsed = parse_syslog(line)
    (p,) = [v for k, v in parsed["sd"].items() if k.startswith("strongroom@")]
    record = {
        "tenant_id": p.get("tenant"),
        "event_id": p.get("eventId"),
        "event_version": _int_or_none(p.get("eventVersion")),
        "time": datetime.fromisoformat(parsed["timestamp"]),
        "actor": {"kind": p.get("actorKind"), "id": p.get("actor"), "auth": p.get("auth")},
        "action": p.get("action"),
        "resource": {"type": p.get("resourceType"), "id": p.get("resource")},
        "outcome": p.get("outcome"),
        "reasons": _json_or(p.get("reasons"), []),
        "trace": _json_or(p.get("trace"), []),
        "correlation_id": p.get("correlationId"),
        "causation_id": p.get("causationId"),
        "source_ip": p.get("src"),
        "details": _json_or(p.get("details"), {}),
        "seq": _int_or_none(p.get("seq")),
        "prev_hash": p.get("prevHash"),
        "hash": p.get("hash"),
    }
    return parsed, record


# ------------------------------------------------------------------ JSON lines

def read_jsonl(line: str) -> tuple[dict, dict]:
    _single_line(line)
    o = json.loads(line)
    um = o.get("unmapped", {})
    target = o.get("entity") or (o.get("resources") or [{}])[0]
    record = {
        "tenant_id": o["metadata"].get("tenant_uid"),
        "event_id": o["metadata"].get("uid"),
        "event_version": um.get("event_version"),
        "time": datetime.fromisoformat(o["time_dt"]) if "time_dt" in o else _ms(o["time"]),
        "actor": {"kind": o["actor"]["user"].get("type"), "id": o["actor"]["user"].get("uid"),
                  "auth": um.get("auth")},
        "action": o.get("api", {}).get("operation"),
        "resource": {"type": target.get("type"), "id": target.get("uid")},
        "outcome": o.get("status"),
        "reasons": um.get("reasons", []),
        "trace": um.get("trace", []),
        "correlation_id": o["metadata"].get("correlation_uid"),
        "causation_id": um.get("causation_id"),
        "source_ip": o.get("src_endpoint", {}).get("ip"),
        "details": um.get("details", {}),
        "seq": o["metadata"].get("sequence"),
        "prev_hash": um.get("chain", {}).get("prev_hash"),
        "hash": um.get("chain", {}).get("hash"),
    }
    return o, record


READERS = {"cef": read_cef, "leef": read_leef, "syslog": read_syslog, "jsonl": read_jsonl}
# Formats whose time carries milliseconds only (CEF rt, LEEF devTime).
MILLISECOND_TIME = frozenset({"cef", "leef"})


def expected(record: dict, fmt: str) -> dict:
    """The record as a format can carry it: time as an aware datetime, at its precision."""
    when = datetime.fromisoformat(record["time"])
    when = (when if when.tzinfo else when.replace(tzinfo=UTC)).astimezone(UTC)
    if fmt in MILLISECOND_TIME:
        when = when.replace(microsecond=when.microsecond // 1000 * 1000)
    return {**record, "time": when}
