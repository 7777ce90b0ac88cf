"""Events of key custody: destruction, import and export, root of trust, KEK rotation, shredding."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from .base import Event

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


class CustodyCustodianKeyEnrolled(Event):
    """A root custodian enrolled (or replaced) their own public key; their next share is sealed to it."""

    type: Literal["custody.custodian_key_enrolled"] = "custody.custodian_key_enrolled"
    custody_id: str = "root"
    custodian_id: str
    key_id: str  # a fingerprint of the public key (never a private key: that stays on the custodian's machine)


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


class TenantDestroyed(Event):
    """Offboarding done: the tenant's KEKs and wrapped keys are shredded (so every data key of the
    tenant is gone at once), with the signed tenant-destruction certificate (digests, never material)."""

    type: Literal["tenant.destroyed"] = "tenant.destroyed"
    offboarding_id: str  # the tenant.offboarded event that asked for it
    certificate_id: str
    keys: int
    kek_versions: tuple[int, ...]
    wrapped_blobs_shredded: int
    certificate: dict[str, Any]
    signature: str  # Ed25519 over the certificate's canonical JSON, base64
    signing_key_id: str
