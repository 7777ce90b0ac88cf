"""Every audit record field reaches CEF, LEEF 2.0, RFC 5424 and JSON lines, for every event type,
and comes back equal through an independent reader; docs/siem-mapping.md lists every field."""

from __future__ import annotations

import json
import re
import types
import typing
from datetime import UTC, datetime
from pathlib import Path

import pytest
from pydantic import BaseModel

from services.auditsvc.records import record_from_event
from services.auditsvc.siem import render
from shared.audit_chain import ChainHead
from shared.events import AnyEvent, DeviceRevoked, event_types
from shared.events.base import Actor

from .siem_readers import READERS, expected, parse_leef, parse_syslog, read_cef, read_leef

# What an operator may type: every character the formats treat specially, a line break, a tab,
# a Unicode line separator, C1 and NUL controls, and non-ASCII text.
NASTY_TEXT = 'pcr7 a|b=c\\d^e]f"g\nsecond line\r\n\tü \u2028\x85\x00end; x'
# Identifiers and other one-line values: the special characters, no line break.
NASTY_ID = 'id|b=c\\d^e]f"g'
WHEN = datetime(2026, 12, 4, 18, 59, 0, 476123, tzinfo=UTC)

# Every type literal of every event model (a model's `type` may admit several: tenant lifecycle,
# role changes, ...), with the model that carries it.
_MODELS = {t: m for m in AnyEvent.__args__[0].__args__ for t in typing.get_args(m.model_fields["type"].annotation)}
ALL_TYPES = sorted(_MODELS)


def _sample(annotation, name: str):
    """A value of a field's type, carrying the hostile characters wherever a string goes."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        return _sample(next(a for a in args if a is not type(None)), name)
    if origin is typing.Literal:
        return args[0]
    if origin is tuple:
        return (_sample(args[0], name), _sample(args[0], name))
    if origin is dict and typing.get_origin(args[1]) is typing.Literal:  # a provenance map, say
        return {NASTY_TEXT: typing.get_args(args[1])[0]}
    if origin is dict or annotation is dict:
        return {"note": NASTY_TEXT, "nested": [1, {"deep": NASTY_ID, "none": None}]}
    if annotation is str:
        return NASTY_ID if name.endswith("_id") or name == "type" else NASTY_TEXT
    if annotation is bool:
        return True
    if annotation is int:
        return 3
    if annotation is float:
        return 1.5
    if annotation is datetime:
        return WHEN
    if annotation is Actor:
        return Actor(kind="user", id=NASTY_ID, auth="password+totp")
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation(**{n: _sample(f.annotation, n) for n, f in annotation.model_fields.items()})
    raise AssertionError(f"no sample for {name}: {annotation!r}")


def sample_event(type_: str, **fields) -> dict:
    """The event as auditsvc receives it (model_dump in JSON mode), every field filled in."""
    model = _MODELS[type_]
    values = {name: _sample(f.annotation, name) for name, f in model.model_fields.items()
              if name not in ("type", "version", "tenant_id", "event_id", "occurred_at", "source_ip")}
    values.update(type=type_, tenant_id="t|=\\^]x", event_id="evt|=\\^]1", occurred_at=WHEN,
                  source_ip="2001:db8::7" if len(type_) % 2 else "198.51.100.7")
    values.update(fields)
    return model(**values).model_dump(mode="json")


def chained(event: dict) -> dict:
    """The record as stored: second in its chain, so prev_hash is a real hash."""
    head = ChainHead.genesis(event["tenant_id"])
    _, head = head.append(record_from_event({**event, "event_id": "evt-0"}))
    record, _ = head.append(record_from_event(event))
    return record


# ------------------------------------------------------------------ the device revocation reason

def test_device_revocation_reason_reaches_cef_and_leef():
    event = DeviceRevoked(tenant_id="t-acme", device_id="dev-1", reason="stolen laptop; ticket=INC-7",
                          actor=Actor(kind="user", id="alice", auth="password+totp"))
    record = chained(event.model_dump(mode="json"))
    assert record["details"]["reason"] == "stolen laptop; ticket=INC-7"
    fields, back = read_cef(render(record, "cef"))
    assert back["details"]["reason"] == "stolen laptop; ticket=INC-7", fields
    attrs, back = read_leef(render(record, "leef"))
    assert back["details"]["reason"] == "stolen laptop; ticket=INC-7", attrs


# ------------------------------------------------------------------ every field, every event type

def test_the_sample_covers_every_event_type():
    assert sorted(event_types()) == ALL_TYPES


@pytest.mark.parametrize("fmt", sorted(READERS))
@pytest.mark.parametrize("type_", ALL_TYPES)
def test_every_record_field_reaches_each_format(type_, fmt):
    record = chained(sample_event(type_))
    _, back = READERS[fmt](render(record, fmt))
    assert back == expected(record, fmt)


@pytest.mark.parametrize("fmt", sorted(READERS))
def test_newlines_and_special_characters_round_trip(fmt):
    record = chained(sample_event("device.revoked", reason=NASTY_TEXT, device_id=NASTY_ID))
    line = render(record, fmt)
    assert "\n" not in line and "\r" not in line and "\u2028" not in line
    _, back = READERS[fmt](line)
    assert back["details"]["reason"] == NASTY_TEXT
    assert back["resource"]["id"] == NASTY_ID
    assert back == expected(record, fmt)


def test_optional_fields_absent_come_back_absent():
    event = {**sample_event("key.created"), "causation_id": None, "source_ip": None,
             "actor": {"kind": "service", "id": "keysvc", "auth": None}}
    record = chained(event)
    for fmt, read in READERS.items():
        assert read(render(record, fmt))[1] == expected(record, fmt), fmt


def test_leef_with_a_tab_delimiter_round_trips():
    record = chained(sample_event("device.revoked", reason=NASTY_TEXT))
    _, back = read_leef(render(record, "leef", delimiter="\t"))
    assert back == expected(record, "leef")


def test_strict_readers_refuse_a_raw_newline():
    record = chained(sample_event("device.revoked"))
    with pytest.raises(ValueError):
        parse_syslog(render(record, "syslog") + "\nforged")
    with pytest.raises(ValueError):
        parse_leef(render(record, "leef") + "\nforged")


# ------------------------------------------------------------------ the mapping table stays honest

MAPPING_DOC = Path(__file__).resolve().parents[2] / "docs" / "siem-mapping.md"
COLUMNS = ["Record field", "CEF", "LEEF 2.0", "RFC 5424 SD-PARAM", "JSON lines"]


def mapping_rows() -> list[dict[str, str]]:
    """The one markdown table of docs/siem-mapping.md whose header row is COLUMNS."""
    lines = [ln.strip() for ln in MAPPING_DOC.read_text(encoding="utf-8").splitlines()]
    cells = [[c.strip() for c in ln.strip("|").split("|")] for ln in lines if ln.startswith("|")]
    start = cells.index(COLUMNS)
    assert set("".join(cells[start + 1])) <= set("-: "), "the header is followed by a separator row"
    rows = []
    for row in cells[start + 2:]:
        if row == COLUMNS:
            break
        rows.append(dict(zip(COLUMNS, row, strict=True)))
    return rows


def record_fields(record: dict) -> set[str]:
    """Top-level fields, and the parts of actor and resource as actor.kind, resource.id, ..."""
    fields: set[str] = set()
    for key, value in record.items():
        fields |= {f"{key}.{part}" for part in value} if key in ("actor", "resource") else {key}
    return fields


def _first_key(cell: str) -> str | None:
    m = re.search(r"`([^`]+)`", cell)
    return m.group(1) if m else None


def _json_path(obj, path: str):
    for part in path.split("."):
        obj = obj[int(part)] if isinstance(obj, list) else obj[part]
    return obj


def test_mapping_table_lists_every_record_field_once():
    rows = mapping_rows()
    names = [row["Record field"].strip("`") for row in rows]
    record = chained(sample_event("key.decided"))
    assert sorted(names) == sorted(record_fields(record))
    assert all(all(row.values()) for row in rows), "every field names where it goes in every format"


def test_mapping_table_names_keys_the_formats_really_emit():
    record = chained(sample_event("key.decided", source_ip="198.51.100.7"))
    cef, leef = render(record, "cef"), parse_leef(render(record, "leef"))[1]
    sd = next(iter(parse_syslog(render(record, "syslog"))["sd"].values()))
    obj = json.loads(render(record, "jsonl"))
    for row in mapping_rows():
        if key := _first_key(row["CEF"]):
            assert f" {key}=" in cef or f"|{key}=" in cef, (row, key)
        if key := _first_key(row["LEEF 2.0"]):
            assert key in leef, (row, key)
        if key := _first_key(row["RFC 5424 SD-PARAM"]):
            assert key in sd, (row, key)
        if key := _first_key(row["JSON lines"]):
            _json_path(obj, key)
