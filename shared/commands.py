"""Request contracts the gateway sends to services (and validates at the edge first).

The same models validate the operator's HTTP body and the service's RPC params, and they
feed the OpenAPI document, so the edge, the services and the docs cannot disagree.
"""

from __future__ import annotations

import base64
from typing import Any, Literal
from zoneinfo import available_timezones

from pydantic import BaseModel, ConfigDict, Field, SerializerFunctionWrapHandler, model_serializer

from .key_states import OPERATOR_ACTIONS
from .provenance import Provenance

# Derived from the one declaration of the lifecycle, so a new action reaches the edge by itself.
OperatorAction = Literal[OPERATOR_ACTIONS]  # type: ignore[valid-type]
NAME = r"^[A-Za-z0-9][A-Za-z0-9 ._:/@-]{0,127}$"


def raw32_base64(value: str, what: str) -> str:
    """A base64 field that must hold exactly 32 bytes (X25519 and Ed25519 public keys)."""
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{what} must be base64") from None
    if len(raw) != 32:
        raise ValueError(f"{what} must be 32 bytes, got {len(raw)}")
    return value


BASE64 = r"^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$"


_B64_TAIL = {0: "", 1: "[A-Za-z0-9+/][AQgw]==", 2: "[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]="}


def base64_of(max_bytes: int, *, exactly: bool = False) -> dict[str, Any]:
    """JSON Schema extra of a base64 string field of 1..max_bytes bytes (or exactly max_bytes)."""
    longest = 4 * -(-max_bytes // 3)
    if exactly:
        return {"pattern": f"^[A-Za-z0-9+/]{{{4 * (max_bytes // 3)}}}{_B64_TAIL[max_bytes % 3]}$",
                "minLength": longest, "maxLength": longest}
    return {"pattern": BASE64, "minLength": 4, "maxLength": longest}


def some_change(schema: dict[str, Any]) -> None:
    """JSON Schema of a partial update: at least one member, none of them null (null and absent
    both mean "unchanged", so a body of only those changes nothing and is refused)."""
    schema["minProperties"] = 1
    for name, prop in schema.get("properties", {}).items():
        branches = [b for b in prop.get("anyOf", []) if b != {"type": "null"}]
        if "anyOf" in prop and len(branches) == 1:
            rest = {k: v for k, v in prop.items() if k not in ("anyOf", "default")}
            schema["properties"][name] = {**branches[0], **rest}


def items_among(values: tuple[str, ...] | list[str]) -> dict[str, Any]:
    """JSON Schema extra for a list of names checked against a known set by a validator."""
    return {"items": {"type": "string", "enum": sorted(values)}, "uniqueItems": True}


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True)


class NoParams(Strict):
    """A method that takes no parameters."""


class Reply(BaseModel):
    """An RPC result: exactly the fields a handler set go on the wire, so an optional key that a
    reply leaves out stays out (as when results were plain dicts). An undeclared key is refused, never dropped."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    @model_serializer(mode="wrap")
    def _set_fields_only(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if k in self.model_fields_set}


class KeyRef(Strict):
    key_id: str


class KeyView(Reply):
    """What operators see of a key: metadata and version pointers, never material (times ISO 8601)."""

    key_id: str
    name: str
    algorithm: str
    state: str
    latest_version: int
    min_decryption_version: int
    created_at: str
    updated_at: str
    volume: str | None = None
    exportable: bool = False
    rotation_period_seconds: int | None = None
    activated_at: str | None = None
    deactivated_at: str | None = None
    compromised_at: str | None = None
    destroyed_at: str | None = None
    next_rotation_at: str | None = None


class KeyList(Reply):
    items: list[KeyView]
    next: str | None


class CreateKey(Strict):
    """Create a volume key: its first version is generated and wrapped in custody."""

    name: str = Field(pattern=NAME, description="Unique key name within the tenant")
    algorithm: Literal["AES-128", "AES-192", "AES-256"] = "AES-256"
    volume: str | None = Field(default=None, max_length=256, description="The volume this key protects")
    exportable: bool = False
    rotation_period_seconds: int | None = Field(default=None, ge=3600, le=10 * 365 * 86400)
    activate: bool = Field(default=True, description="Start active (releasable) rather than pre-activation")


class ChangeKeyState(Strict):
    """A lifecycle action from NIST SP 800-57: suspend, resume, deactivate, mark_compromised, activate."""

    action: OperatorAction
    reason: str = Field(min_length=1, max_length=500)


class RotateKey(Strict):
    """Add a new latest version; older versions still decrypt down to min_decryption_version."""

    reason: str = Field(default="rotation", max_length=500)


_IDS = {"anyOf": [{"const": "all"}, {"type": "array", "items": {"type": "string", "minLength": 1}}]}
_TARGETS = {"type": "object", "additionalProperties": False, "properties": {
    "devices": _IDS, "keys": _IDS, "device_groups": {"type": "array", "items": {"type": "string"}},
    "key_groups": {"type": "array", "items": {"type": "string"}}}}
# A rule's envelope; its `when` condition is the policy language (docs/policies.md), checked by policysvc.
_RULE = {"type": "object", "additionalProperties": False, "required": ["id", "effect", "when"], "properties": {
    "id": {"type": "string", "minLength": 1, "maxLength": 64, "pattern": r"^[A-Za-z0-9][A-Za-z0-9_.:-]*$"},
    "description": {"type": "string", "maxLength": 1024},
    "effect": {"enum": ["allow", "deny", "require_approval"]},
    "when": {"type": "object", "description": "A condition: {all|any: [...]}, {not: ...}, {fact, op, value} or a time window"},
    "approval": {"type": "object", "additionalProperties": False, "properties": {
        "approvals_required": {"type": "integer", "minimum": 1, "maximum": 20},
        "expires_in_seconds": {"type": "integer", "minimum": 60, "maximum": 30 * 86400},
        "remember_for_seconds": {"type": "integer", "minimum": 0, "maximum": 365 * 86400}}}}}


class PutPolicy(Strict):
    """A policy document (see the policy engine's rule reference); every put makes a new version."""

    name: str = Field(pattern=NAME)
    description: str = Field(default="", max_length=2000)
    targets: dict[str, Any] = Field(default_factory=lambda: {"devices": "all", "keys": "all"}, json_schema_extra=_TARGETS)
    disclose: Literal["none", "reasons", "full"] = "reasons"
    timezone: str = Field(default="UTC", json_schema_extra={"enum": sorted(available_timezones())})
    # Facts weaker than this (shared/provenance.py) count as absent unless a condition names its own.
    minimum_provenance: Provenance = "claimed"
    rules: list[dict[str, Any]] = Field(min_length=1, max_length=200, json_schema_extra={"items": _RULE})


class ListQuery(Strict):
    limit: int = Field(default=100, ge=1, le=1000)
    after: str | None = Field(default=None, max_length=200)


class ChangeKeyStateCall(KeyRef):
    change: ChangeKeyState


class RotateKeyCall(KeyRef):
    rotate: RotateKey
