"""Request contracts the gateway sends to services (and validates at the edge first).

The same models validate the operator's HTTP body and the service's RPC params, and they
feed the OpenAPI document, so the edge, the services and the docs cannot disagree.
"""

from __future__ import annotations

import base64
from typing import Any, Literal

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


class PutPolicy(Strict):
    """A policy document (see the policy engine's rule reference); every put makes a new version."""

    name: str = Field(pattern=NAME)
    description: str = Field(default="", max_length=2000)
    targets: dict[str, Any] = Field(default_factory=lambda: {"devices": "all", "keys": "all"})
    disclose: Literal["none", "reasons", "full"] = "reasons"
    timezone: str = "UTC"
    # Facts weaker than this (shared/provenance.py) count as absent unless a condition names its own.
    minimum_provenance: Provenance = "claimed"
    rules: list[dict[str, Any]] = Field(min_length=1, max_length=200)


class ListQuery(Strict):
    limit: int = Field(default=100, ge=1, le=1000)
    after: str | None = Field(default=None, max_length=200)


class ChangeKeyStateCall(KeyRef):
    change: ChangeKeyState


class RotateKeyCall(KeyRef):
    rotate: RotateKey
