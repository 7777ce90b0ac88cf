"""Every message contract between the services: frozen, versioned pydantic events.

The `type` literal is also the routing key on the topic exchange. Decode once through
`decode_event`; evolve a contract by bumping `version` and adding an upcast below it.
No event carries key material in the clear: released keys travel HPKE-sealed to the
agent's one-time public key, which only the agent can open.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, TypeVar, Union

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError


def new_id(prefix: str = "") -> str:
    return f"{prefix}{uuid.uuid4().hex}"


def utcnow() -> datetime:
    return datetime.now(UTC)


E = TypeVar("E", bound="Event")


class Actor(BaseModel):
    """Who caused an event: a user, a device, a service, the provider or the bootstrap credential."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    kind: Literal["user", "device", "service", "provider", "bootstrap"]
    id: str
    auth: str | None = None


SYSTEM = Actor(kind="service", id="strongroom")


class Event(BaseModel):
    """The envelope shared by all events."""

    model_config = ConfigDict(frozen=True, extra="forbid")
    event_id: str = Field(default_factory=new_id)
    version: int = 1
    tenant_id: str
    occurred_at: datetime = Field(default_factory=utcnow)
    correlation_id: str = Field(default_factory=new_id)
    causation_id: str | None = None
    actor: Actor = SYSTEM
    source_ip: str | None = None

    @property
    def routing_key(self) -> str:
        """The AMQP routing key: the type, refined where consumers want only some of an event's kind."""
        return self.type

    def caused(self, cls: type[E], **fields: Any) -> E:
        """A follow-up event in the same conversation (same correlation, caused by this one)."""
        fields.setdefault("tenant_id", self.tenant_id)
        fields.setdefault("correlation_id", self.correlation_id)
        fields.setdefault("actor", self.actor)
        return cls(causation_id=self.event_id, **fields)


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


class EnrollmentTokenCreated(Event):
    type: Literal["enrollment.created"] = "enrollment.created"
    enrollment_id: str
    expires_at: datetime


class DeviceEnrolled(Event):
    type: Literal["device.enrolled"] = "device.enrolled"
    device_id: str
    enrollment_id: str
    name: str
    public_key: str  # Ed25519 public key, base64 (public material)
    groups: tuple[str, ...] = ()


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
    """An agent asks for a key. `ephemeral_public_key` is a one-time X25519 key (public)."""

    type: Literal["key.requested"] = "key.requested"
    request_id: str
    device_id: str
    key_id: str
    facts: dict[str, Any]
    ephemeral_public_key: str  # raw X25519 public key, base64
    key_version: int | None = None  # None: the latest version (for new encryption)


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


# --- policies, device groups, approvals, notifications: event models ---------------


class GroupUpdated(Event):
    """A device or key group's new version; the document travels so caches refresh without a read."""

    type: Literal["group.updated"] = "group.updated"
    group_id: str
    kind: Literal["device", "key"]
    name: str
    group_version: int
    document: dict[str, Any]


class GroupDeleted(Event):
    type: Literal["group.deleted"] = "group.deleted"
    group_id: str
    kind: Literal["device", "key"]
    name: str


class PolicySettingsUpdated(Event):
    """A tenant's policy settings (approval expiry, heartbeat grace) changed."""

    type: Literal["tenant.policy_settings_updated"] = "tenant.policy_settings_updated"
    settings: dict[str, Any]


class ApprovalRequested(Event):
    """A require_approval decision: a request waits for operators until `expires_at`."""

    type: Literal["approval.requested"] = "approval.requested"
    approval_id: str
    request_id: str
    device_id: str
    key_id: str
    approvals_required: int
    expires_at: datetime
    reasons: tuple[str, ...] = ()
    outcome: Literal["pending"] = "pending"  # the audit record's outcome: a request now waiting


class ApprovalVoted(Event):
    """One operator approved; more approvals are still needed."""

    type: Literal["approval.voted"] = "approval.voted"
    approval_id: str
    request_id: str
    approvals_received: int
    approvals_required: int
    comment: str = ""


class ApprovalGranted(Event):
    type: Literal["approval.granted"] = "approval.granted"
    approval_id: str
    request_id: str
    device_id: str
    key_id: str
    approvers: tuple[str, ...]
    comment: str = ""
    remember_until: datetime | None = None


class ApprovalDenied(Event):
    type: Literal["approval.denied"] = "approval.denied"
    approval_id: str
    request_id: str
    device_id: str
    key_id: str
    comment: str = ""


class ApprovalExpired(Event):
    type: Literal["approval.expired"] = "approval.expired"
    approval_id: str
    request_id: str
    device_id: str
    key_id: str


class DevicePostureFailed(Event):
    """A device's fresh facts no longer satisfy the policy that released its keys, or it went silent."""

    type: Literal["device.posture_failed"] = "device.posture_failed"
    device_id: str
    cause: Literal["facts", "heartbeat_missed"]
    key_ids: tuple[str, ...] = ()
    reasons: tuple[str, ...] = ()


class DeviceQuarantined(Event):
    type: Literal["device.quarantined"] = "device.quarantined"
    device_id: str
    reason: str


class DeviceQuarantineCleared(Event):
    type: Literal["device.quarantine_cleared"] = "device.quarantine_cleared"
    device_id: str
    reason: str


# --- audit exports, forwarders, reports: event models ----------------------------------


class AuditCheckpointed(Event):
    """auditsvc signed its chain head (Ed25519); keep these elsewhere to pin the chain."""

    type: Literal["audit.checkpointed"] = "audit.checkpointed"
    checkpoint_seq: int
    chain_hash: str
    checkpoint_time: str
    signing_key_id: str
    signature: str  # Ed25519 over the checkpoint (services/auditsvc/chain.py), base64


class AuditArchived(Event):
    """Records up to `to_seq` were archived to a signed file and removed from the online store."""

    type: Literal["audit.archived"] = "audit.archived"
    archive_id: str
    from_seq: int
    to_seq: int
    records: int
    sha256: str


class AuditRetentionUpdated(Event):
    type: Literal["audit.retention_updated"] = "audit.retention_updated"
    retention_days: float


class ForwarderCreated(Event):
    """A tenant's continuous SIEM forwarder; `destination` names where, never with a secret."""

    type: Literal["forwarder.created"] = "forwarder.created"
    forwarder_id: str
    name: str
    kind: str
    destination: str
    format: str
    event_types: tuple[str, ...] = ()


class ForwarderUpdated(Event):
    type: Literal["forwarder.updated"] = "forwarder.updated"
    forwarder_id: str
    changes: dict[str, Any]


class ForwarderDeleted(Event):
    type: Literal["forwarder.deleted"] = "forwarder.deleted"
    forwarder_id: str


class ForwarderSecretRotated(Event):
    """A webhook forwarder signs with a new secret from now on (the secret itself is never in an event)."""

    type: Literal["forwarder.secret_rotated"] = "forwarder.secret_rotated"
    forwarder_id: str


# --- accounts and sign-in: event models ----------------------------------------------


class TenantLifecycleChanged(Event):
    """A provider admin suspended, resumed or offboarded a customer tenant."""

    type: Literal["tenant.suspended", "tenant.resumed", "tenant.offboarded"]


class TenantSettingsChanged(Event):
    """Settings applied, or (small-team mode, single sign-on) requested and waiting for a second
    tenant admin, whose confirmation then applies them with the requester named."""

    type: Literal["tenant.settings_changed", "tenant.settings_change_pending"] = "tenant.settings_changed"
    settings: dict[str, Any]
    change_id: str | None = None
    requested_by: str | None = None


class UserCreated(Event):
    type: Literal["user.created"] = "user.created"
    user_id: str
    username: str
    account: Literal["person", "service"] = "person"
    roles: tuple[str, ...] = ()
    pending_roles: tuple[str, ...] = ()
    source: str = "local"  # local, bootstrap, oidc, saml


class UserRolesChanged(Event):
    """Roles granted (effective now), granted pending a second admin, confirmed, or revoked."""

    type: Literal["user.role_granted", "user.role_pending", "user.role_confirmed", "user.role_revoked"]
    user_id: str
    roles: tuple[str, ...]
    granted_by: str | None = None


class UserLoggedIn(Event):
    type: Literal["user.logged_in"] = "user.logged_in"
    user_id: str
    method: str  # password, password+totp, password+recovery_code, oidc, saml
    session_id: str


class UserLoginFailed(Event):
    type: Literal["user.login_failed"] = "user.login_failed"
    user_id: str | None = None
    username: str
    method: str
    reason: str


class UserLoggedOut(Event):
    type: Literal["user.logged_out"] = "user.logged_out"
    user_id: str
    session_id: str


class UserMfaEnrolled(Event):
    type: Literal["user.mfa_enrolled"] = "user.mfa_enrolled"
    user_id: str
    method: Literal["totp"] = "totp"


class UserPasswordSet(Event):
    type: Literal["user.password_set"] = "user.password_set"
    user_id: str


class UserRecoveryCodeUsed(Event):
    type: Literal["user.recovery_code_used"] = "user.recovery_code_used"
    user_id: str
    remaining: int


class UserMfaReset(Event):
    """An admin asked to reset a user's MFA (pending), and a second admin confirmed (reset)."""

    type: Literal["user.mfa_reset_pending", "user.mfa_reset"]
    user_id: str
    requested_by: str


# --- key custody: event models ---------------------------------------------------------


class KeyMinDecryptionVersionSet(Event):
    type: Literal["key.min_decryption_version_set"] = "key.min_decryption_version_set"
    key_id: str
    min_decryption_version: int
    reason: str = ""


class KeyDestructionScheduled(Event):
    type: Literal["key.destruction_scheduled"] = "key.destruction_scheduled"
    key_id: str
    destruction_id: str
    not_before: datetime
    reason: str
    forced: bool = False
    dependent_releases: int = 0


class KeyDestructionApproved(Event):
    type: Literal["key.destruction_approved"] = "key.destruction_approved"
    key_id: str
    destruction_id: str


class KeyDestructionCancelled(Event):
    type: Literal["key.destruction_cancelled"] = "key.destruction_cancelled"
    key_id: str
    destruction_id: str
    reason: str


class KeyDestroyed(Event):
    """Crypto-shredding done: the signed destruction certificate (digests only, never material)."""

    type: Literal["key.destroyed"] = "key.destroyed"
    key_id: str
    destruction_id: str
    certificate: dict[str, Any]
    signature: str  # Ed25519 over the certificate's canonical JSON, base64
    signing_key_id: str


class KeyImported(Event):
    type: Literal["key.imported"] = "key.imported"
    key_id: str
    name: str
    algorithm: str
    wrapping_algorithm: str


class KeyExported(Event):
    type: Literal["key.exported"] = "key.exported"
    key_id: str
    key_version: int
    wrapping_algorithm: str
    recipient_fingerprint: str  # SHA-256 of the caller's public key


class CustodySettingsChanged(Event):
    type: Literal["custody.settings_changed"] = "custody.settings_changed"
    custody_id: str = "settings"
    settings: dict[str, Any]


class CustodyInitialized(Event):
    """Root of trust created; only its fingerprint and the share layout are recorded, never shares."""

    type: Literal["custody.initialized"] = "custody.initialized"
    custody_id: str = "root"
    root_fingerprint: str
    custodian_count: int  # how many shares were handed out (a count, never a share)
    threshold: int


class CustodyUnsealProgress(Event):
    type: Literal["custody.unseal_progress"] = "custody.unseal_progress"
    custody_id: str = "root"
    submitted: int
    needed: int | None
    unsealed: bool = False


class CustodyRekeyed(Event):
    type: Literal["custody.rekeyed"] = "custody.rekeyed"
    custody_id: str = "root"
    root_fingerprint: str
    previous_fingerprint: str
    custodian_count: int  # how many shares were handed out (a count, never a share)
    threshold: int
    keks_rewrapped: int


class CustodyRekeyRolledBack(Event):
    """A root re-key was cancelled, or expired unverified, before its switch: the current shares stay in force."""

    type: Literal["custody.rekey_rolled_back"] = "custody.rekey_rolled_back"
    custody_id: str = "root"
    root_fingerprint: str  # still in force
    abandoned_fingerprint: str
    reason: str


class KekRotationStarted(Event):
    type: Literal["kek.rotation_started"] = "kek.rotation_started"
    kek_id: str
    kek_version: int
    from_version: int
    total: int


class KekRotated(Event):
    type: Literal["kek.rotated"] = "kek.rotated"
    kek_id: str
    kek_version: int
    rewrapped: int
    retired_versions: tuple[int, ...] = ()


class TenantKeysShredded(Event):
    """Offboarding: the tenant's KEKs are shredded, so every data key of the tenant is gone at once."""

    type: Literal["tenant.keys_shredded"] = "tenant.keys_shredded"
    keys: int
    kek_versions: tuple[int, ...]
    wrapped_blobs_shredded: int


AnyEvent = Annotated[
    Union[
        TenantCreated,
        TokenCreated,
        TokenRevoked,
        AccessDenied,
        EnrollmentTokenCreated,
        DeviceEnrolled,
        DeviceRevoked,
        KeyCreated,
        KeyRotated,
        KeyStateChanged,
        PolicyUpdated,
        PolicyDeleted,
        KeyRequested,
        KeyDecided,
        KeyReleased,
        KeyReleaseRefused,
        # --- accounts and sign-in ---
        TenantLifecycleChanged,
        TenantSettingsChanged,
        UserCreated,
        UserRolesChanged,
        UserLoggedIn,
        UserLoginFailed,
        UserLoggedOut,
        UserMfaEnrolled,
        UserPasswordSet,
        UserRecoveryCodeUsed,
        UserMfaReset,
        # --- policies, device groups, approvals, notifications ---
        GroupUpdated,
        GroupDeleted,
        PolicySettingsUpdated,
        ApprovalRequested,
        ApprovalVoted,
        ApprovalGranted,
        ApprovalDenied,
        ApprovalExpired,
        DevicePostureFailed,
        DeviceQuarantined,
        DeviceQuarantineCleared,
        # --- key custody ---
        KeyMinDecryptionVersionSet,
        KeyDestructionScheduled,
        KeyDestructionApproved,
        KeyDestructionCancelled,
        KeyDestroyed,
        KeyImported,
        KeyExported,
        CustodySettingsChanged,
        CustodyInitialized,
        CustodyUnsealProgress,
        CustodyRekeyed,
        CustodyRekeyRolledBack,
        KekRotationStarted,
        KekRotated,
        TenantKeysShredded,
        # --- audit exports, forwarders, reports ---
        AuditCheckpointed,
        AuditArchived,
        AuditRetentionUpdated,
        ForwarderCreated,
        ForwarderUpdated,
        ForwarderDeleted,
        ForwarderSecretRotated,
    ],
    Field(discriminator="type"),
]

_ADAPTER: TypeAdapter[Event] = TypeAdapter(AnyEvent)

# Upcasts: (type, from_version) -> function turning the old payload into the next version.
UPCASTS: dict[tuple[str, int], Any] = {
    ("key.decided", 1): _key_decided_v1_to_v2,
}


class MalformedEvent(ValueError):
    """A message that is not a valid event; it is dead-lettered with this reason."""


def decode_event(body: bytes) -> Event:
    """Parse and validate a message body, upcasting older versions first.

    Every consumer decodes every event it gets, so the usual case (a current version) is parsed
    and validated in one pass by pydantic; an older version or an invalid body takes the careful
    path, which upcasts, or names what is wrong for the dead-letter reason.
    """
    import json

    try:
        event = _ADAPTER.validate_json(body)
    except ValidationError:
        pass
    else:
        if (event.type, event.version) not in UPCASTS:
            return event
    try:
        raw = json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise MalformedEvent(f"not JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise MalformedEvent("event must be a JSON object")
    while (up := UPCASTS.get((raw.get("type"), raw.get("version")))) is not None:
        raw = up(raw)
    try:
        return _ADAPTER.validate_python(raw)
    except Exception as exc:  # pydantic.ValidationError: keep only the locations and messages
        errors = getattr(exc, "errors", lambda: [])()
        detail = "; ".join(
            ".".join(str(p) for p in e.get("loc", ())) + ": " + e.get("msg", "") for e in errors[:5]
        )
        raise MalformedEvent(detail or str(exc)) from None


def encode_event(event: Event) -> bytes:
    return event.model_dump_json().encode()


def event_types() -> list[str]:
    return [m.model_fields["type"].default for m in AnyEvent.__args__[0].__args__]  # type: ignore[attr-defined]
