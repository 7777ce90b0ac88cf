"""Events of tenants and operator access, devices, keys, policies and the release pipeline."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from shared.provenance import GATEWAY_OBSERVED, Provenance

from .base import Event

# --- tenants and operator access -----------------------------------------------------


class TenantCreated(Event):
    type: Literal["tenant.created"] = "tenant.created"
    name: str


class TokenCreated(Event):
    type: Literal["token.created"] = "token.created"
    token_id: str
    name: str
    role: str
    user_id: str | None = None  # the owning user (a person's personal token or a service account's)
    expires_at: datetime | None = None
    minted_by: str | None = None  # who created it (and so received its secret)
    confirmed_by: str | None = None  # the second admin, for a custodian or approver service account


class TokenRevoked(Event):
    type: Literal["token.revoked"] = "token.revoked"
    token_id: str


class AccessDenied(Event):
    """A refused request at the edge (bad credential, bad signature, replay)."""

    type: Literal["access.denied"] = "access.denied"
    route: str
    reason: str
    device_id: str | None = None


# --- devices -------------------------------------------------------------------------


class EvidenceSummary(BaseModel):
    """What the gateway made of the evidence a request carried: never the evidence itself."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: str
    verified: bool
    provenance: Provenance | None = None  # of the facts it proved, when verified
    subject: str | None = None  # the stable identity it proved, e.g. "aws:<account>/<instance>"
    reason: str = ""  # why it was refused: a short, generic message


class EnrollmentTokenCreated(Event):
    type: Literal["enrollment.created"] = "enrollment.created"
    enrollment_id: str
    expires_at: datetime


class DeviceEnrolled(Event):
    """Version 2: ``subject`` is the instance the device's enrolment evidence proved (bound to it,
    first come, first served: trust on first use), ``evidence`` what became of that evidence."""

    type: Literal["device.enrolled"] = "device.enrolled"
    version: int = 2
    device_id: str
    enrollment_id: str
    name: str
    public_key: str  # Ed25519 public key, base64 (public material)
    groups: tuple[str, ...] = ()
    subject: str | None = None
    evidence: EvidenceSummary | None = None


def _device_enrolled_v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 enrolled without evidence."""
    return {**raw, "version": 2}


class DeviceTpmRegistered(Event):
    """A device proved its attestation key lives in the TPM holding its endorsement key
    (MakeCredential/ActivateCredential): its quotes are attested from now on."""

    type: Literal["device.tpm_registered"] = "device.tpm_registered"
    device_id: str
    ak_subject: str  # "tpm:<AK name hex>"
    ek_certified: bool = False  # the EK certificate chained to a manufacturer root


class DeviceRevoked(Event):
    type: Literal["device.revoked"] = "device.revoked"
    device_id: str
    reason: str = ""


# --- keys ----------------------------------------------------------------------------


class KeyCreated(Event):
    type: Literal["key.created"] = "key.created"
    key_id: str
    name: str
    algorithm: str
    volume: str | None = None
    key_version: int = 1


class KeyRotated(Event):
    type: Literal["key.rotated"] = "key.rotated"
    key_id: str
    key_version: int
    reason: str = ""


class KeyStateChanged(Event):
    type: Literal["key.state_changed"] = "key.state_changed"
    key_id: str
    from_state: str
    to_state: str
    action: str
    reason: str = ""


# --- policies ------------------------------------------------------------------------


class PolicyUpdated(Event):
    """A policy's new version. The document travels so that caches can refresh without a read."""

    type: Literal["policy.updated"] = "policy.updated"
    policy_id: str
    policy_version: int
    name: str
    document: dict[str, Any]


class PolicyDeleted(Event):
    type: Literal["policy.deleted"] = "policy.deleted"
    policy_id: str


# --- the release pipeline ------------------------------------------------------------


class KeyRequested(Event):
    """An agent asks for a key. `ephemeral_public_key` is a one-time X25519 key (public).

    Version 2: ``provenance`` maps fact paths to where they came from (``shared/provenance.py``;
    a path not in it is claimed); ``contradicted`` names the facts whose claimed value differed
    from verified evidence (the verified value is the one in ``facts``); ``evidence`` says what
    the gateway made of the evidence sent.
    """

    type: Literal["key.requested"] = "key.requested"
    version: int = 2
    request_id: str
    device_id: str
    key_id: str
    facts: dict[str, Any]
    ephemeral_public_key: str  # raw X25519 public key, base64
    key_version: int | None = None  # None: the latest version (for new encryption)
    provenance: dict[str, Provenance] = Field(default_factory=lambda: dict(GATEWAY_OBSERVED))
    contradicted: tuple[str, ...] = ()
    evidence: EvidenceSummary | None = None


def _key_requested_v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 had no provenance: the gateway set ``observed`` and the device id, the agent the rest."""
    return {**raw, "version": 2, "provenance": dict(GATEWAY_OBSERVED)}


class KeyDecided(Event):
    """policysvc's verdict with its reasons; keysvc acts on allow, the gateway answers deny.

    Version 2: ``trace`` is compact (the deciding rules and, unless allowed, the conditions that
    decided); the full trace stays in policysvc's decision record, committed to by ``trace_sha256``.
    """

    type: Literal["key.decided"] = "key.decided"
    version: int = 2
    request_id: str
    device_id: str
    key_id: str
    effect: Literal["allow", "deny", "require_approval"]
    reasons: tuple[str, ...] = ()
    disclosed: dict[str, Any] = Field(default_factory=dict)
    trace: tuple[dict[str, Any], ...] = ()
    trace_sha256: str | None = None  # of the full canonical trace; None when no policy was evaluated
    decided_by: tuple[dict[str, Any], ...] = ()
    ephemeral_public_key: str
    key_version: int | None = None

    @property
    def routing_key(self) -> str:
        """``key.decided.allow`` goes to keysvc only, the others to the gateway's waiters only."""
        return f"key.decided.{self.effect}"


def _key_decided_v1_to_v2(raw: dict[str, Any]) -> dict[str, Any]:
    """Version 1 carried the full trace: still a true (if long) trace, with no digest to check."""
    return {**raw, "version": 2}


class KeyReleased(Event):
    """The data key sealed (HPKE) to the request's ephemeral key: opaque to all but the agent."""

    type: Literal["key.released"] = "key.released"
    request_id: str
    device_id: str
    key_id: str
    key_version: int
    algorithm: str
    sealed_key: str  # HPKE ciphertext, base64
    hpke_suite: str = "DHKEM(X25519,HKDF-SHA256)/HKDF-SHA256/AES-256-GCM"
    # The key's newest version: when above key_version the agent should re-encrypt under it.
    latest_version: int | None = None


class KeyReleaseRefused(Event):
    """keysvc would not release: unknown key, key not active, custody sealed, audit unavailable."""

    type: Literal["key.release_refused"] = "key.release_refused"
    request_id: str
    device_id: str
    key_id: str
    reason: str
    status: Literal["not_found", "not_active", "sealed", "audit_unavailable", "error"]
