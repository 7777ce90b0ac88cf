"""Audit records: turn a bus event into the canonical, secret-free record the audit log keeps."""

from __future__ import annotations

import copy
import functools
import re
from typing import Any

# Envelope fields every event carries; they become top-level record fields, never details.
_ENVELOPE = frozenset({
    "event_id", "type", "version", "tenant_id", "occurred_at",
    "correlation_id", "causation_id", "actor", "source_ip",
})

# Which payload field names the resource, by the noun that prefixes the event type.
_RESOURCE_ID_FIELDS: dict[str, tuple[str, ...]] = {
    "key": ("key_id",),
    "device": ("device_id",),
    "policy": ("policy_id",),
    "tenant": ("tenant_id",),
    "user": ("user_id", "username"),
    "approval": ("approval_id", "request_id"),
    "request": ("request_id",),
    "provider": ("provider_id",),
    "audit": ("archive_id",),
    "forwarder": ("forwarder_id",),
}
# Fallback for unfamiliar nouns: the first id-ish field present names the resource.
_FALLBACK_ID_FIELDS = (
    ("key", "key_id"), ("device", "device_id"), ("policy", "policy_id"),
    ("user", "user_id"), ("approval", "approval_id"), ("request", "request_id"),
)

OUTCOMES = frozenset({"success", "failure", "denied", "pending", "unknown"})
_EFFECT_OUTCOME = {"allow": "success", "deny": "denied", "require_approval": "pending"}
# Verb endings of event types, checked in order; the type name is the contract, so it is trusted.
_VERB_OUTCOME = (
    (("failed", "failure", "refused", "error", "errored", "timed_out"), "failure"),
    (("denied", "rejected", "forbidden"), "denied"),
    (("pending", "approval_required"), "pending"),
)

# SECURITY: events must never carry secret material (shared/events.py forbids it), but the audit
# log is copied to SIEMs and kept for years, so any field whose name says "secret" is dropped here
# too, at any depth. Names are matched as whole snake_case word runs, so "device_private_key" and
# "shamir_shares" go while "shared_with" stays. Over-dropping an innocent field is the safe error.
SECRET_NAME_TERMS = frozenset({
    "secret", "secrets", "password", "passwords", "passwd", "passphrase", "passphrases",
    "token", "tokens", "private_key", "private_keys", "plaintext", "key_material",
    "share", "shares", "api_key", "api_keys", "credential", "credentials", "cookie", "cookies",
    "wrapped_key", "seed", "sealed_key",
})

# Identifiers of secrets (token_id, credential_id) are not secrets and must stay auditable.
_IDENTIFIER_SUFFIXES = frozenset({"id", "ids", "fingerprint"})


def _snake_words(name: str) -> list[str]:
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", name)
    return [w for w in re.split(r"[^a-z0-9]+", snake.lower()) if w]


@functools.lru_cache(maxsize=4096)
def is_secret_name(name: str) -> bool:
    """True if a field name contains a denylisted term as a whole run of words."""
    words = _snake_words(name)
    if words and words[-1] in _IDENTIFIER_SUFFIXES:
        return False
    for i in range(len(words)):
        for j in range(i + 1, min(len(words), i + 2) + 1):
            if "_".join(words[i:j]) in SECRET_NAME_TERMS:
                return True
    return False


_IMMUTABLE = (str, int, float, bool, type(None))


def scrub(value: Any) -> Any:
    """Deep copy of a JSON value with every secret-named mapping key removed."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in sorted(value.items()) if not is_secret_name(str(k))}
    if isinstance(value, (list, tuple)):
        return [scrub(v) for v in value]
    if isinstance(value, _IMMUTABLE):  # the common leaf: nothing to copy
        return value
    return copy.deepcopy(value)


def _noun_and_verb(action: str) -> tuple[str, str]:
    noun, _, verb = action.partition(".")
    return noun, verb


def _find_resource(action: str, payload: dict[str, Any], tenant_id: str) -> tuple[dict[str, Any], str | None]:
    noun, _ = _noun_and_verb(action)
    if noun == "tenant":
        # The tenant is named by the envelope, so tenant events need no payload id.
        return {"type": "tenant", "id": tenant_id}, None
    for field in _RESOURCE_ID_FIELDS.get(noun, (f"{noun}_id",)):
        if payload.get(field) is not None:
            return {"type": noun, "id": str(payload[field])}, field
    for rtype, field in _FALLBACK_ID_FIELDS:
        if payload.get(field) is not None:
            return {"type": rtype, "id": str(payload[field])}, field
    return {"type": noun or "unknown", "id": None}, None


def derive_outcome(action: str, payload: dict[str, Any]) -> str:
    """How it ended: an explicit outcome, else the policy effect, else the type's verb."""
    explicit = payload.get("outcome")
    if isinstance(explicit, str) and explicit.lower() in OUTCOMES:
        return explicit.lower()
    effect = payload.get("effect")
    if isinstance(effect, str) and effect.lower() in _EFFECT_OUTCOME:
        return _EFFECT_OUTCOME[effect.lower()]
    _, verb = _noun_and_verb(action)
    for endings, outcome in _VERB_OUTCOME:
        if verb.endswith(endings):
            return outcome
    return "success"


def _actor(raw: Any) -> dict[str, Any]:
    raw = raw if isinstance(raw, dict) else {}
    auth = raw.get("auth")
    return {
        "kind": str(raw.get("kind") or "unknown"),
        "id": None if raw.get("id") is None else str(raw["id"]),
        "auth": None if auth is None else str(auth),
    }


def record_from_event(event: dict[str, Any]) -> dict[str, Any]:
    """Build the canonical audit record for one event; same event in, same record out."""
    missing = [f for f in ("event_id", "type", "tenant_id", "occurred_at") if not event.get(f)]
    if missing:
        raise ValueError(f"event lacks required envelope fields: {', '.join(missing)}")
    action = str(event["type"])
    tenant_id = str(event["tenant_id"])
    payload = {k: v for k, v in event.items() if k not in _ENVELOPE}
    resource, id_field = _find_resource(action, payload, tenant_id)
    outcome = derive_outcome(action, payload)

    # Whatever became a top-level field is not repeated in details.
    consumed = {"reasons", "trace", id_field}
    if isinstance(payload.get("outcome"), str) and payload["outcome"].lower() == outcome:
        consumed.add("outcome")

    reasons = payload.get("reasons") or []
    if isinstance(reasons, str):
        reasons = [reasons]
    return {
        "tenant_id": tenant_id,
        "event_id": str(event["event_id"]),
        "event_version": event.get("version"),
        "time": str(event["occurred_at"]),
        "actor": _actor(event.get("actor")),
        "action": action,
        "resource": resource,
        "outcome": outcome,
        # Reasons are an operator's explanation and kept verbatim (STYLE §5).
        "reasons": [str(r) for r in reasons],
        # The decision trace is kept as emitted, minus any secret-named keys.
        "trace": scrub(payload.get("trace") or []),
        "correlation_id": event.get("correlation_id"),
        "causation_id": event.get("causation_id"),
        "source_ip": event.get("source_ip"),
        "details": scrub({k: v for k, v in payload.items() if k not in consumed}),
    }
