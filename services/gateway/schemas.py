"""Bodies of the gateway's own routes (the ones that do not go to another service)."""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, WithJsonSchema, field_validator

from shared.commands import NAME, Strict, base64_of, raw32_base64
from shared.commands_volumes import VolumeRef

from .roles import TENANT_ROLES

MAX_FACTS_BYTES = 16 * 1024


def _bounded(facts: dict[str, Any]) -> dict[str, Any]:
    if len(json.dumps(facts)) > MAX_FACTS_BYTES:
        raise ValueError(f"facts must be at most {MAX_FACTS_BYTES} bytes of JSON")
    return facts


# Any JSON a store can hold (see state.unstorable): keys without NUL, integers within 64 bits.
_KEY = {"type": "string", "pattern": "^[^\u0000]*$"}
_INT64 = {"minimum": -(2**63), "maximum": 2**63 - 1}
FACT_VALUE = {"anyOf": [
    {"type": "null"}, {"type": "boolean"}, {"type": "string"}, {"type": "number", **_INT64},
    {"type": "array", "items": {"$ref": "#/components/schemas/FactValue"}},
    {"type": "object", "propertyNames": _KEY, "additionalProperties": {"$ref": "#/components/schemas/FactValue"}},
]}

# What an agent reports about itself (key requests and heartbeats), bounded in size.
Facts = Annotated[dict[str, Any], AfterValidator(_bounded), WithJsonSchema({
    "type": "object", "propertyNames": _KEY, "additionalProperties": {"$ref": "#/components/schemas/FactValue"},
    "description": f"Facts as JSON, at most {MAX_FACTS_BYTES} bytes"})]


def _evidence(evidence: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(evidence.get("kind"), str):
        raise ValueError("evidence needs a kind")
    if len(json.dumps(evidence)) > 2 * MAX_FACTS_BYTES:
        raise ValueError(f"evidence must be at most {2 * MAX_FACTS_BYTES} bytes of JSON")
    return evidence


# Proof of some facts, signed by a key the VM does not hold: {"kind": "aws" | "signed" | ..., ...}.
Evidence = Annotated[dict[str, Any], AfterValidator(_evidence), WithJsonSchema({
    "type": "object", "required": ["kind"], "propertyNames": _KEY,
    "properties": {"kind": {"type": "string", "description": "aws, gcp, azure, tpm, signed, ..."}},
    "additionalProperties": {"$ref": "#/components/schemas/FactValue"},
    "description": f"Evidence as JSON, at most {2 * MAX_FACTS_BYTES} bytes; unverifiable evidence proves nothing"})]


# Secrets the gateway issues (shared/crypto/tokens.py): a readable prefix and URL-safe base64.
TOKEN_PATTERN = r"^[A-Za-z0-9_-]+$"

class CreateTenant(Strict):
    name: str = Field(pattern=NAME)


class CreateToken(Strict):
    name: str = Field(pattern=NAME)
    roles: list[str] = Field(min_length=1, max_length=len(TENANT_ROLES))
    expires_in_seconds: int | None = Field(default=None, ge=60, le=365 * 86400)

    @field_validator("roles")
    @classmethod
    def _known_roles(cls, roles: list[str]) -> list[str]:
        unknown = sorted(set(roles) - set(TENANT_ROLES))
        if unknown:
            raise ValueError(f"unknown roles {unknown}; known: {list(TENANT_ROLES)}")
        return sorted(set(roles))


class CreateEnrollment(Strict):
    name: str | None = Field(default=None, pattern=NAME)
    ttl_seconds: int = Field(default=24 * 3600, ge=60, le=30 * 86400)
    groups: list[str] = Field(default_factory=list, max_length=32)


Challenge = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{16,128}$",
                                 description="A challenge from POST /v1/agent/challenges the evidence answers (single use)")]


class Enroll(Strict):
    enrollment_token: str = Field(min_length=10, max_length=200, pattern=TOKEN_PATTERN)
    name: str = Field(pattern=NAME)
    public_key: str = Field(description="Ed25519 public key, base64 of the raw 32 bytes",
                            json_schema_extra=base64_of(32, exactly=True))
    evidence: Evidence | None = None  # proves the instance; binds it to this device (first come, first served)
    challenge: Challenge | None = None  # from POST /v1/agent/enroll/challenges with this token

    @field_validator("public_key")
    @classmethod
    def _ed25519(cls, value: str) -> str:
        return raw32_base64(value, "public_key")


class RevokeDevice(Strict):
    reason: str = Field(min_length=1, max_length=500)


class KeyRequestBody(Strict):
    key_id: str = Field(min_length=1, max_length=100)
    key_version: int | None = Field(default=None, ge=1, le=2**63 - 1)
    facts: Facts = Field(default_factory=dict)
    evidence: Evidence | None = None
    challenge: Challenge | None = None
    ephemeral_public_key: str = Field(description="One-time X25519 public key, base64 of the raw 32 bytes",
                                      json_schema_extra=base64_of(32, exactly=True))
    volume: VolumeRef | None = Field(default=None, description="The registered volume this key unlocks")

    @field_validator("ephemeral_public_key")
    @classmethod
    def _x25519(cls, value: str) -> str:
        return raw32_base64(value, "ephemeral_public_key")


class SamlPost(Strict):
    """What the IdP's HTTP-POST binding sends (a form, not JSON)."""

    model_config = ConfigDict(extra="allow")
    SAMLResponse: str = Field(min_length=1, description="The base64 SAML Response")
    RelayState: str = Field(min_length=1, description="The state given with the AuthnRequest")
