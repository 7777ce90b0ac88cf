"""Unit tests for SIEM renderings, checked against the CEF, LEEF 2.0 and RFC 5424 rules."""

import json
import re

import pycef
import pytest

from services.auditsvc.records import record_from_event
from services.auditsvc.siem import (
    cef_escape_header,
    cef_escape_value,
    frame_octet_counted,
    leef_escape_value,
    render,
    sd_escape,
    to_cef,
    to_jsonl,
    to_leef,
    to_syslog,
)
from shared.audit_chain import ChainHead

NASTY_REASON = 'pcr7 mismatch: a=b | c\\d\nsecond "line" ]end'


def make_record(type_="key.decided", outcome_fields=None, **overrides):
    ev = {
        "event_id": "evt-1",
        "type": type_,
        "version": 1,
        "tenant_id": "t-acme",
        "occurred_at": "2024-05-01T12:00:00.123456+00:00",
        "correlation_id": "corr=1",
        "causation_id": "cause-1",
        "actor": {"kind": "device", "id": "dev|7\\x", "auth": "signature"},
        "source_ip": "198.51.100.7",
        "key_id": "k-1",
        "effect": "deny",
        "reasons": [NASTY_REASON, "policy p-1"],
        **(outcome_fields or {}),
    }
    ev.update(overrides)
    rec = record_from_event(ev)
    linked, _ = ChainHead.genesis("t-acme").append(rec)
    return linked


RT_MS = 1714564800123  # 2024-05-01T12:00:00.123Z


# ------------------------------------------------------------------ CEF

def cef_unescape(value):
    """Reverse of the CEF extension escaping, as a spec-following consumer would."""
    return re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), value)


def split_cef(line):
    """Independent CEF reader: header on unescaped pipes, extension keys at unescaped '='."""
    parts, buf, i = [], "", 0
    while len(parts) < 7:
        ch = line[i]
        if ch == "\\":
            buf += line[i + 1]
            i += 2
            continue
        if ch == "|":
            parts.append(buf)
            buf = ""
        else:
            buf += ch
        i += 1
    ext, pairs = line[i:], {}
    keys = list(re.finditer(r"(?:^| )([A-Za-z0-9_]+)=", ext))
    keys = [m for m in keys if not _escaped(ext, m.end() - 1)]
    for m, nxt in zip(keys, [*keys[1:], None], strict=True):
        raw = ext[m.end(): nxt.start() if nxt else len(ext)]
        pairs[m.group(1)] = cef_unescape(raw)
    return parts, pairs


def _escaped(text, pos):
    n = 0
    while pos - n - 1 >= 0 and text[pos - n - 1] == "\\":
        n += 1
    return n % 2 == 1


def test_cef_header():
    line = to_cef(make_record())
    assert line.startswith("CEF:0|Strongroom|Strongroom|0.1.0|key.decided|Key decided|6|rt=")


def test_cef_escape_functions_follow_spec():
    assert cef_escape_header("a|b\\c") == "a\\|b\\\\c"
    assert cef_escape_value("a=b\\c\nd\re|f") == "a\\=b\\\\c\\nd\\re|f"  # pipes need no escape
    assert cef_escape_value("x\r\ny") == "x\\ny"


def test_cef_header_escapes_pipe_and_backslash():
    rec = make_record()
    rec["action"] = "odd|type\\x"
    line = to_cef(rec)
    assert "|odd\\|type\\\\x|" in line
    header, _ = split_cef(line)
    assert header[4] == "odd|type\\x"
    assert header[6] == "6"


def test_cef_is_a_single_line():
    line = to_cef(make_record())
    assert "\n" not in line and "\r" not in line


def test_cef_roundtrip_with_pycef():
    rec = make_record()
    parsed = pycef.parse(to_cef(rec))
    assert parsed is not None
    assert parsed["DeviceVendor"] == "Strongroom"
    assert parsed["DeviceProduct"] == "Strongroom"
    assert parsed["DeviceVersion"] == "0.1.0"
    assert parsed["DeviceEventClassID"] == "key.decided"
    assert parsed["Name"] == "Key decided"
    assert parsed["Severity"] == "6"
    # pycef returns values still escaped; unescape them as the spec says.
    got = {k: cef_unescape(v) for k, v in parsed.items()}
    assert got["rt"] == str(RT_MS)
    assert got["act"] == "key.decided"
    assert got["outcome"] == "denied"
    assert got["externalId"] == "evt-1"
    assert got["suser"] == "dev|7\\x"
    assert got["src"] == "198.51.100.7"
    assert got["tenantId"] == "t-acme"
    assert got["correlationId"] == "corr=1"
    assert got["causationId"] == "cause-1"
    assert got["resource"] == "key:k-1"
    assert got["actorKind"] == "device"
    assert got["actorAuth"] == "signature"
    assert got["chainSeq"] == "1"
    assert got["chainHash"] == rec["hash"]
    assert got["msg"] == NASTY_REASON + "; policy p-1"


def test_cef_roundtrip_with_independent_reader():
    rec = make_record()
    header, ext = split_cef(to_cef(rec))
    assert header == ["CEF:0", "Strongroom", "Strongroom", "0.1.0", "key.decided", "Key decided", "6"]
    assert ext["msg"] == NASTY_REASON + "; policy p-1"
    assert ext["cs2Label"] == "correlationId" and ext["cs2"] == "corr=1"
    assert ext["suser"] == "dev|7\\x"


def test_cef_ipv6_source_and_target_user():
    rec = make_record("user.login_failed", source_ip="2001:db8::1", user_id="alice", effect=None)
    ext = split_cef(to_cef(rec))[1]
    assert "src" not in ext
    assert ext["c6a2"] == "2001:db8::1" and ext["c6a2Label"] == "Source IPv6 Address"
    assert ext["duser"] == "alice" and ext["outcome"] == "failure"


def test_cef_severity_follows_outcome():
    assert to_cef(make_record(effect="allow")).split("|")[6] == "3"
    assert to_cef(make_record(effect="require_approval")).split("|")[6] == "4"


# ------------------------------------------------------------------ LEEF 2.0

def split_leef(line):
    header = re.split(r"(?<!\\)\|", line, maxsplit=6)
    delim = chr(int(header[5][1:], 16))
    attrs = {}
    for item in re.split(r"(?<!\\)" + re.escape(delim), header[6]):
        key, _, value = item.partition("=")
        attrs[key] = re.sub(r"\\(.)", lambda m: {"n": "\n", "r": "\r"}.get(m.group(1), m.group(1)), value)
    return header[:6], attrs


def test_leef_header_and_default_caret_delimiter():
    line = to_leef(make_record())
    assert line.startswith("LEEF:2.0|Strongroom|Strongroom|0.1.0|key.decided|x5E|devTime=")
    assert "\n" not in line and "\r" not in line


def test_leef_attributes_roundtrip():
    rec = make_record()
    header, attrs = split_leef(to_leef(rec))
    assert header[:5] == ["LEEF:2.0", "Strongroom", "Strongroom", "0.1.0", "key.decided"]
    assert attrs["devTime"] == "2024-05-01T12:00:00.123+0000"
    assert attrs["devTimeFormat"] == "yyyy-MM-dd'T'HH:mm:ss.SSSZ"
    assert attrs["cat"] == "denied"
    assert attrs["sev"] == "6"
    assert attrs["usrName"] == "dev|7\\x"
    assert attrs["src"] == "198.51.100.7"
    assert attrs["resource"] == "k-1" and attrs["resourceType"] == "key"
    assert attrs["tenantId"] == "t-acme"
    assert attrs["eventId"] == "evt-1"
    assert attrs["correlationId"] == "corr=1"
    assert attrs["reason"] == NASTY_REASON + "; policy p-1"
    assert attrs["chainHash"] == rec["hash"]


def test_leef_escapes_the_delimiter_in_values():
    assert leef_escape_value("a^b\\c", "^") == "a\\^b\\\\c"
    rec = make_record(reasons=["x^y^z"])
    line = to_leef(rec)
    assert "reason=x\\^y\\^z" in line
    assert split_leef(line)[1]["reason"] == "x^y^z"


def test_leef_tab_delimiter():
    rec = make_record(reasons=["tab\there"])
    line = to_leef(rec, delimiter="\t")
    assert "|x09|" in line
    assert split_leef(line)[1]["reason"] == "tab\there"


@pytest.mark.parametrize("bad", ["", "^^", "=", "|", "\n", "\\"])
def test_leef_rejects_unusable_delimiters(bad):
    with pytest.raises(ValueError):
        to_leef(make_record(), delimiter=bad)


def test_leef_marks_login_events():
    assert "isLoginEvent=true" in to_leef(make_record("user.login_failed", user_id="u"))
    assert "isLoginEvent" not in to_leef(make_record())


# ------------------------------------------------------------------ RFC 5424

SYSLOG_RE = re.compile(
    r"^<(?P<pri>\d{1,3})>1 (?P<ts>\S+) (?P<host>\S+) (?P<app>\S+) (?P<proc>\S+) (?P<msgid>\S+) "
    r"(?P<sd>\[(?:\\.|[^\]\\])*\]) (?P<msg>.*)$", re.S)
SD_PARAM_RE = re.compile(r' ([^= \]"]{1,32})="((?:\\.|[^"\\])*)"')


def parse_syslog(line):
    m = SYSLOG_RE.match(line)
    assert m, line
    sd = m["sd"]
    sd_id = re.match(r"\[([^ \]]+)", sd).group(1)
    params = {k: re.sub(r'\\(["\\\]])', r"\1", v) for k, v in SD_PARAM_RE.findall(sd)}
    return m, sd_id, params


def test_sd_escape_follows_rfc5424():
    assert sd_escape('a"b\\c]d') == 'a\\"b\\\\c\\]d'
    assert sd_escape("x\ny") == "x y"


def test_syslog_header_and_pri():
    line = to_syslog(make_record(), hostname="audit-1")
    m, sd_id, params = parse_syslog(line)
    assert m["pri"] == str(13 * 8 + 4)  # log audit, warning (denied)
    assert m["ts"] == "2024-05-01T12:00:00.123456Z"
    assert (m["host"], m["app"], m["proc"], m["msgid"]) == ("audit-1", "strongroom-audit", "-", "key.decided")
    assert sd_id == "strongroom@32473"
    assert "\n" not in line and "\r" not in line


@pytest.mark.parametrize(("effect", "severity"), [("allow", 6), ("require_approval", 5), ("deny", 4)])
def test_syslog_severity_from_outcome(effect, severity):
    assert parse_syslog(to_syslog(make_record(effect=effect)))[0]["pri"] == str(13 * 8 + severity)
    assert parse_syslog(to_syslog(make_record(effect=effect), facility=10))[0]["pri"] == str(80 + severity)


def test_syslog_sd_params_roundtrip_with_escaping():
    rec = make_record(correlation_id='c"1]\\x')
    _, _, params = parse_syslog(to_syslog(rec, pen=99999))
    assert params["correlationId"] == 'c"1]\\x'
    assert params["actor"] == "dev|7\\x"
    assert params["tenant"] == "t-acme"
    assert params["eventId"] == "evt-1"
    assert params["outcome"] == "denied"
    assert params["seq"] == "1" and params["hash"] == rec["hash"]
    assert 'strongroom@99999' in to_syslog(rec, pen=99999)


def test_syslog_msg_bom_only_for_non_ascii():
    ascii_msg = parse_syslog(to_syslog(make_record(reasons=["plain"])))[0]["msg"]
    assert not ascii_msg.startswith("\ufeff") and "plain" in ascii_msg
    utf8_msg = parse_syslog(to_syslog(make_record(reasons=["Schlüssel"])))[0]["msg"]
    assert utf8_msg.startswith("\ufeff") and "Schlüssel" in utf8_msg


def test_syslog_header_fields_are_printusascii_or_nil():
    m, _, _ = parse_syslog(to_syslog(make_record(), hostname="bad host\n", app_name=""))
    assert m["host"] == "badhost" and m["app"] == "-"
    with pytest.raises(ValueError):
        to_syslog(make_record(), facility=24)


def test_frame_octet_counted_counts_bytes():
    assert frame_octet_counted("héllo") == b"6 h\xc3\xa9llo"
    line = to_syslog(make_record(reasons=["Schlüssel"]))
    framed = frame_octet_counted(line)
    length, _, body = framed.partition(b" ")
    assert int(length) == len(body) and body.decode("utf-8") == line


# ------------------------------------------------------------------ JSON lines

def test_jsonl_is_one_compact_line():
    line = to_jsonl(make_record(reasons=["a\nb\u2028c"]))
    assert "\n" not in line and "\u2028" not in line and ", " not in line
    assert json.loads(line)["status_detail"] == "a\nb\u2028c"


def test_jsonl_ocsf_mapping_for_key_decision():
    rec = make_record()
    obj = json.loads(to_jsonl(rec))
    assert (obj["class_uid"], obj["category_uid"], obj["activity_id"]) == (6003, 6, 99)
    assert obj["type_uid"] == 600399
    assert obj["time"] == RT_MS
    assert obj["status"] == "denied" and obj["status_id"] == 2
    assert obj["metadata"]["uid"] == "evt-1"
    assert obj["metadata"]["tenant_uid"] == "t-acme"
    assert obj["metadata"]["sequence"] == 1
    assert obj["actor"]["user"] == {"uid": "dev|7\\x", "type": "device"}
    assert obj["resources"] == [{"uid": "k-1", "type": "key"}]
    assert obj["src_endpoint"] == {"ip": "198.51.100.7"}
    assert obj["unmapped"]["chain"]["hash"] == rec["hash"]
    assert obj["unmapped"]["reasons"] == [NASTY_REASON, "policy p-1"]


@pytest.mark.parametrize(("type_", "extra", "class_uid", "activity_id"), [
    ("user.login_failed", {"user_id": "u"}, 3002, 1),
    ("device.enrolled", {"device_id": "d"}, 3004, 6),
    ("policy.updated", {"policy_id": "p"}, 3004, 3),
    ("tenant.created", {}, 3004, 1),
    ("key.released", {}, 6003, 2),
])
def test_jsonl_ocsf_classes(type_, extra, class_uid, activity_id):
    obj = json.loads(to_jsonl(make_record(type_, effect=None, **extra)))
    assert obj["class_uid"] == class_uid and obj["activity_id"] == activity_id
    assert obj["type_uid"] == class_uid * 100 + activity_id


# ------------------------------------------------------------------ dispatch

def test_render_dispatches_every_format():
    rec = make_record()
    assert render(rec, "cef") == to_cef(rec)
    assert render(rec, "leef") == to_leef(rec)
    assert render(rec, "syslog") == to_syslog(rec)
    assert render(rec, "jsonl") == to_jsonl(rec)
    assert render(rec, "syslog", hostname="h1") == to_syslog(rec, hostname="h1")


def test_render_rejects_unknown_format():
    with pytest.raises(ValueError, match="xml"):
        render(make_record(), "xml")


def test_control_characters_never_reach_a_line():
    rec = make_record(reasons=["nul\x00 bell\x07 nel\x85 ls\u2028"])
    for fmt in ("cef", "leef", "syslog"):
        line = render(rec, fmt)
        assert not any(c in line for c in "\x00\x07\x85\u2028\n\r"), fmt
