"""Continuous forwarders, the pure part: configuration, event-type filters, framing, signatures, backoff.

A forwarder sends a tenant's records, in sequence order, to one destination: syslog over TCP or
TLS (RFC 5425 octet-counted framing) or an HTTP(S) webhook whose body is signed with
HMAC-SHA256. Its cursor (the last forwarded sequence number) only moves after the destination
took the batch, so a failure is retried, never skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from shared.topics import topic_matches

from . import siem

KINDS = ("syslog_tcp", "syslog_tls", "webhook")
FORMATS = ("syslog", "cef", "leef", "jsonl")
SIGNATURE_HEADER = "X-Strongroom-Signature"
TIMESTAMP_HEADER = "X-Strongroom-Timestamp"
_PATTERN = re.compile(r"^(?:[a-z0-9_]+|\*|#)(?:\.(?:[a-z0-9_]+|\*|#))*$")


def _check_patterns(value: list[str]) -> list[str]:
    for pattern in value:
        if not _PATTERN.match(pattern):
            raise ValueError(f"{pattern!r} is not an event type pattern (words, '*' or '#', dot-separated)")
    return value


class ForwarderSpec(BaseModel):
    """What an operator sets when creating a forwarder (secrets are generated, never chosen)."""

    model_config = ConfigDict(extra="forbid")
    name: str = Field(min_length=1, max_length=100)
    kind: Literal["syslog_tcp", "syslog_tls", "webhook"]
    format: Literal["syslog", "cef", "leef", "jsonl"] = "syslog"
    host: str | None = Field(default=None, max_length=255)
    port: int | None = Field(default=None, ge=1, le=65535)
    url: str | None = Field(default=None, max_length=2000)
    # Routing-key patterns ("key.*", "approval.#"); empty means every record.
    event_types: list[str] = Field(default_factory=list, max_length=50)
    tls_ca_pem: str | None = Field(default=None, max_length=20000)
    tls_server_name: str | None = Field(default=None, max_length=255)
    start: Literal["beginning", "now"] = "beginning"
    enabled: bool = True

    @field_validator("event_types")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return _check_patterns(value)

    @model_validator(mode="after")
    def _destination(self) -> ForwarderSpec:
        if self.kind == "webhook":
            parts = urlsplit(self.url or "")
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url: a webhook needs an http(s) URL")
            if self.host or self.port:
                raise ValueError("host: a webhook takes url, not host/port")
        else:
            if not self.host or not self.port:
                raise ValueError("host: a syslog forwarder needs host and port")
            if self.url:
                raise ValueError("url: a syslog forwarder takes host/port, not url")
        if self.kind != "syslog_tls" and (self.tls_ca_pem or self.tls_server_name):
            raise ValueError("tls_ca_pem: TLS settings apply to syslog_tls only")
        return self

    def destination(self) -> str:
        if self.kind == "webhook":
            parts = urlsplit(self.url or "")
            # The query string may carry a token: it never appears in events or listings.
            return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
        scheme = "tls" if self.kind == "syslog_tls" else "tcp"
        return f"{scheme}://{self.host}:{self.port}"


class ForwarderChange(BaseModel):
    """The fields an operator may change later; destination changes mean a new forwarder."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, min_length=1, max_length=100)
    format: Literal["syslog", "cef", "leef", "jsonl"] | None = None
    event_types: list[str] | None = Field(default=None, max_length=50)
    enabled: bool | None = None

    @field_validator("event_types")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        return value if value is None else _check_patterns(value)


def selected(action: str, patterns: Sequence[str]) -> bool:
    """AMQP topic semantics, like the bus: `*` is one word, `#` any number; no patterns = all."""
    return not patterns or any(topic_matches(p, action) for p in patterns)


def syslog_message(record: Mapping[str, Any], fmt: str, *, hostname: str = "-") -> str:
    """One RFC 5424 message; CEF, LEEF and JSON lines travel as its MSG (the usual "X over syslog")."""
    if fmt == "syslog":
        return siem.to_syslog(record, hostname=hostname)
    line = siem.render(record, fmt)
    base = siem.to_syslog(record, hostname=hostname)
    header = base.split(" [", 1)[0]  # PRI VERSION TIMESTAMP HOSTNAME APP-NAME PROCID MSGID
    return f"{header} - {line}"


def syslog_payload(records: Iterable[Mapping[str, Any]], fmt: str, *, hostname: str = "-") -> bytes:
    return b"".join(siem.frame_octet_counted(syslog_message(r, fmt, hostname=hostname)) for r in records)


def webhook_body(records: Sequence[Mapping[str, Any]], fmt: str, *, tenant_id: str, forwarder_id: str) -> bytes:
    if fmt == "jsonl":
        items: list[Any] = [siem.to_ocsf(r) for r in records]
    else:
        items = [siem.render(r, fmt) if fmt != "syslog" else siem.to_syslog(r) for r in records]
    doc = {"tenant_id": tenant_id, "forwarder_id": forwarder_id, "format": fmt,
           "first_seq": records[0]["seq"], "last_seq": records[-1]["seq"],
           "seqs": [r["seq"] for r in records], "records": items}
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=True).encode()


def webhook_signature(secret: str, timestamp: str, body: bytes) -> str:
    """`sha256=<hex>` of HMAC-SHA256(secret, "<timestamp>." + body): the timestamp is signed too,
    so a receiver can refuse replays of an old delivery."""
    mac = hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256)
    return "sha256=" + mac.hexdigest()


def verify_webhook_signature(secret: str, timestamp: str, body: bytes, header: str, *,
                             now: datetime | None = None, tolerance_seconds: int = 300) -> bool:
    """What a receiver does: constant-time compare, and a timestamp within the tolerance."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    current = int((now or datetime.now(UTC)).timestamp())
    if abs(current - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(webhook_signature(secret, timestamp, body), header)


def backoff_seconds(failures: int, *, cap: float, base: float = 0.25) -> float:
    """Exponential backoff after `failures` consecutive failures, capped."""
    return min(cap, base * (2 ** max(0, failures - 1)))
