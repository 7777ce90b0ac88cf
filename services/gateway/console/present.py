"""Pure presentation for the console: countdowns, what each kind of live event says in one line,
which event types each filter of the live stream follows, key versions, device drift and
facts with their provenance. No I/O."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.key_states import ACTIONS, OPERATOR_ACTIONS, STATES
from shared.provenance import fact_path, leaves, lookup, prefixes


def parse_time(value: Any) -> datetime | None:
    """An RFC 3339 string (as RPC replies carry them) or a datetime, as an aware UTC datetime."""
    if isinstance(value, datetime):
        moment = value
    elif isinstance(value, str) and value:
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return None
    else:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def remaining(expires_at: Any, now: datetime) -> str:
    """How long until `expires_at`, in words an operator reads at a glance ("4m 05s", "expired")."""
    moment = parse_time(expires_at)
    if moment is None:
        return "unknown"
    seconds = int((moment - now).total_seconds())
    if seconds <= 0:
        return "expired"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h {minutes:02d}m"
    return f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


@dataclass(frozen=True)
class StreamKind:
    """One filter of the live stream: its name, label and the event types it follows."""

    name: str
    label: str
    patterns: tuple[str, ...]


STREAM_KINDS: tuple[StreamKind, ...] = (
    StreamKind("requests", "Raw requests", ("key.requested",)),
    StreamKind("decisions", "Decisions", ("key.decided", "key.release_refused")),
    StreamKind("releases", "Releases", ("key.released",)),
    StreamKind("approvals", "Approvals", ("approval.*",)),
    StreamKind("alerts", "Device alerts", ("device.posture_failed", "device.quarantined", "device.revoked")),
)


def stream_patterns(kinds: list[str]) -> tuple[str, ...]:
    """The event types the chosen kinds follow (all kinds when none or none known is chosen)."""
    chosen = [k for k in STREAM_KINDS if k.name in kinds] or list(STREAM_KINDS)
    return tuple(p for k in chosen for p in k.patterns)


def summary(event: dict[str, Any]) -> str:
    """One line about a live event (its JSON form), for the stream's table."""
    kind = event.get("type", "")
    if kind == "key.requested":
        version = event.get("key_version")
        facts = event.get("facts") or {}
        contradicted = event.get("contradicted") or ()
        return (f"requested {'version ' + str(version) if version else 'the latest version'}, "
                f"{len(facts)} fact group(s)" + (f"; contradicted: {', '.join(contradicted)}" if contradicted else ""))
    if kind == "key.decided":
        reasons = "; ".join(event.get("reasons") or ())
        return f"decision: {event.get('effect')}" + (f" — {reasons}" if reasons else "")
    if kind == "key.released":
        return f"released version {event.get('key_version')}"
    if kind == "key.release_refused":
        return f"release refused ({event.get('status')}): {event.get('reason')}"
    if kind == "approval.requested":
        return f"approval requested: {event.get('approvals_required', 1)} approval(s) needed"
    if kind == "approval.voted":
        return f"approved by one more: {event.get('approvals_received')} of {event.get('approvals_required')}"
    if kind in ("approval.granted", "approval.denied", "approval.expired"):
        return kind.split(".", 1)[1]
    if kind.startswith("device."):
        reason = event.get("reason") or event.get("cause") or ""
        return kind.split(".", 1)[1].replace("_", " ") + (f": {reason}" if reason else "")
    return kind


def matches(event: dict[str, Any], text: str) -> bool:
    """The stream's text filter: a key, device or request id (or part of one); empty matches all."""
    text = text.strip().lower()
    if not text:
        return True
    return any(text in str(event.get(name) or "").lower() for name in ("key_id", "device_id", "request_id", "approval_id"))


DECISION_WINDOW_MINUTES = 10


def decision_counts(decisions: list[dict[str, Any]], now: datetime,
                    minutes: int = DECISION_WINDOW_MINUTES) -> dict[str, int]:
    """Decisions of the last `minutes` by effect (allow, deny, require_approval)."""
    counts = {"allow": 0, "deny": 0, "require_approval": 0}
    for decision in decisions:
        at = parse_time(decision.get("decided_at"))
        if at is not None and (now - at).total_seconds() <= minutes * 60 and decision.get("effect") in counts:
            counts[decision["effect"]] += 1
    return counts


def fact_rows(facts: dict, provenance: dict[str, str]) -> list[tuple[str, object, str]]:
    """Each fact as (path as rules name it, value, provenance: its own or an ancestor's, else claimed)."""
    return sorted((fact_path(keys), value, lookup(provenance, prefixes(keys))) for keys, value in leaves(facts))


def key_versions(key: dict[str, Any]) -> list[dict[str, Any]]:
    """The key's versions, newest first, each with what it may still do: the latest encrypts and
    decrypts, older ones down to min_decryption_version only decrypt, those below are retired, and
    none remain once the key is destroyed."""
    latest, minimum = int(key.get("latest_version") or 0), int(key.get("min_decryption_version") or 1)
    destroyed = str(key.get("state", "")).startswith("destroyed")
    rows = []
    for version in range(latest, 0, -1):
        if destroyed:
            state = "destroyed"
        elif version < minimum:
            state = "retired"
        else:
            state = "latest" if version == latest else "decrypt only"
        rows.append({"version": version, "state": state})
    return rows


def filter_keys(items: list[dict[str, Any]], state: str, name: str) -> list[dict[str, Any]]:
    """The keys list's filters: an exact state (empty: any) and part of the name or id (case-insensitive)."""
    name = name.strip().lower()
    return [k for k in items if (not state or k.get("state") == state)
            and (not name or name in str(k.get("name", "")).lower() or name in str(k.get("key_id", "")).lower())]


def lifecycle_actions(state: str) -> list[tuple[str, str]]:
    """The lifecycle actions an operator may ask for from `state` (name, what it does), in the
    lifecycle's order; destruction has its own scheduled, dual-control path."""
    rule = STATES.get(state)  # type: ignore[call-overload]
    allowed = rule.transitions if rule else {}
    return [(name, ACTIONS[name].summary) for name in OPERATOR_ACTIONS if name in allowed]


def key_state_counts(keys: list[dict[str, Any]]) -> list[tuple[str, int]]:
    """How many keys are in each lifecycle state, in the lifecycle's order, states with none left out."""
    order = list(STATES)
    counts: dict[str, int] = {}
    for key in keys:
        counts[key.get("state") or "unknown"] = counts.get(key.get("state") or "unknown", 0) + 1
    return sorted(counts.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order))


def drift(posture: dict[str, Any] | None, now: datetime) -> str:
    """What a device's posture says in a word or two: revoked, quarantined (and why), heartbeat
    overdue, never seen, or in line."""
    if not posture:
        return "no posture yet"
    status = posture.get("status")
    if status == "revoked":
        return "revoked"
    if status == "quarantined":
        cause = posture.get("quarantine_cause") or posture.get("quarantine_reason")
        return f"quarantined: {cause}" if cause else "quarantined"
    due = parse_time(posture.get("heartbeat_due"))
    if posture.get("last_heartbeat_at") is None:
        return "no heartbeat yet"
    if due is not None and due < now:
        return "heartbeat overdue"
    return "in line"
