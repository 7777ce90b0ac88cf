"""Continuous forwarders, the pure part: documents, views, event-type filters, framing, signatures, backoff.

A forwarder sends a tenant's records, in sequence order, to one destination: syslog over TCP or
TLS (RFC 5425 octet-counted framing) or an HTTP(S) webhook whose body is signed with
HMAC-SHA256. Its cursor (the last forwarded sequence number) only moves after the destination
took the batch, so a failure is retried, never skipped.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from shared.commands_audit import ForwarderSpec
from shared.topics import topic_matches

from . import siem

SIGNATURE_HEADER = "X-Strongroom-Signature"
TIMESTAMP_HEADER = "X-Strongroom-Timestamp"
# What operators never see of a forwarder: its sealed secret, its URL (which may carry a token), its lease.
_HIDDEN = frozenset({"_id", "_outbox", "secret", "url", "lease_owner", "lease_until"})


def operator_view(doc: Mapping[str, Any], *, head_seq: int, oldest_unsent: str | None, now: datetime) -> dict[str, Any]:
    """A forwarder as operators see it: config, cursor, lag and last error; never its secret.

    `oldest_unsent` is the time of the first record after the cursor, if there is one."""
    view = {k: v for k, v in doc.items() if k not in _HIDDEN}
    view["lag_records"] = max(0, head_seq - doc.get("cursor", 0))
    lag = 0.0
    if oldest_unsent is not None:
        lag = max(0.0, (now - datetime.fromisoformat(oldest_unsent.replace("Z", "+00:00"))).total_seconds())
    view["lag_seconds"] = round(lag, 3)
    return view


def new_forwarder(spec: ForwarderSpec, *, forwarder_id: str, cursor: int, sealed_secret: str | None,
                  now: datetime) -> dict[str, Any]:
    """A new forwarder's document: active, nothing delivered, its cursor where the spec starts it."""
    return {
        **spec.model_dump(exclude={"start"}), "forwarder_id": forwarder_id, "destination": spec.destination(),
        "secret": sealed_secret, "cursor": cursor, "delivered": 0, "failures": 0, "status": "active",
        "last_error": None, "last_error_at": None, "last_delivered_at": None, "created_at": now,
    }


def failed_state(failures: int, error: str, *, now: datetime, delay: float) -> dict[str, Any]:
    """What operators see after a failed send: retrying, how often, why, and when next."""
    return {"status": "retrying", "failures": failures, "last_error": error[:500], "last_error_at": now,
            "next_attempt_at": now + timedelta(seconds=delay)}


def sealed_elsewhere_state(now: datetime) -> dict[str, Any]:
    return {"status": "error", "last_error_at": now,
            "last_error": "its signing secret does not open under this data key; rotate the secret"}


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


def payload(doc: Mapping[str, Any], records: Sequence[Mapping[str, Any]], *, hostname: str) -> bytes:
    """What one send carries to the forwarder's destination: a webhook body or syslog frames."""
    if doc["kind"] == "webhook":
        return webhook_body(records, doc["format"], tenant_id=doc["tenant_id"], forwarder_id=doc["forwarder_id"])
    return syslog_payload(records, doc["format"], hostname=hostname)


def webhook_body(records: Sequence[Mapping[str, Any]], fmt: str, *, tenant_id: str, forwarder_id: str) -> bytes:
    # JSON lines travel as JSON objects inside the JSON body; every other format as its line.
    items: list[Any] = [siem.to_ocsf(r) if fmt == "jsonl" else siem.render(r, fmt) for r in records]
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
