"""Request contracts of the key-custody area (gateway body = keysvc RPC params = OpenAPI schema)."""

from __future__ import annotations

import base64
import re
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from .commands import NAME, KeyRef, Reply, Strict, base64_of, raw32_base64

MAX_WAIT_SECONDS = 30 * 86400


def _base64(value: str, what: str, *, max_bytes: int) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except Exception:
        raise ValueError(f"{what} must be base64") from None
    if not raw or len(raw) > max_bytes:
        raise ValueError(f"{what} must be 1..{max_bytes} bytes")
    return value


class CustodySettingsBody(Strict):
    """A tenant's key policy: minimum key size, destruction waiting period, dependency window."""

    min_key_bits: Literal[128, 192, 256] = 128
    destruction_wait_days: int = Field(default=7, ge=7, le=30)
    dependency_window_days: int = Field(default=30, ge=1, le=365)
    export_deactivated: bool = Field(
        default=False, description="Allow wrapped export of deactivated/compromised keys for re-encryption")


class SetMinDecryptionVersion(Strict):
    """Retire old versions: versions below this no longer decrypt."""

    min_decryption_version: int = Field(ge=1)
    reason: str = Field(min_length=1, max_length=500)


class ScheduleDestruction(Strict):
    """Schedule crypto-shredding after a waiting period; a second custodian must approve."""

    reason: str = Field(min_length=1, max_length=500)
    wait_seconds: int | None = Field(default=None, ge=1, le=MAX_WAIT_SECONDS,
                                     description="Defaults to the tenant's destruction_wait_days")
    force: bool = Field(default=False, description="Destroy even though devices hold recent releases")


class ApproveDestruction(Strict):
    reason: str = Field(default="approved", min_length=1, max_length=500)


class CancelDestruction(Strict):
    reason: str = Field(min_length=1, max_length=500)


USER_ID = r"^[A-Za-z0-9_.:-]{1,100}$"


class InitCustody(Strict):
    """Create the root key and split it into Shamir shares (SLIP-39), each sealed to a different root
    custodian's enrolled key. The threshold is at least 2 (1-of-1 only with keysvc's dev setting)."""

    threshold: int = Field(default=3, ge=1, le=16)
    shares: int | None = Field(default=None, ge=1, le=16, description="Defaults to the number of custodians; "
                               "if given it must equal it (each custodian holds exactly one share)")
    custodians: list[str] | None = Field(default=None, min_length=1, max_length=16, description="The root "
                                         "custodians' user ids, share i sealed to custodian i; default: every "
                                         "root custodian with an enrolled key")

    @field_validator("custodians")
    @classmethod
    def _ids(cls, value: list[str] | None) -> list[str] | None:
        if value is not None and not all(re.fullmatch(USER_ID, v) for v in value):
            raise ValueError("custodians must be user ids")
        return value

    @model_validator(mode="after")
    def _layout(self) -> InitCustody:
        if self.shares is not None and self.threshold > self.shares:
            raise ValueError("threshold must not exceed shares")
        return self


class RekeyRoot(InitCustody):
    """Replace the root key (and its shares) while serving; tenant KEKs are re-wrapped."""


class InitCustodyCall(InitCustody):
    """What the gateway asks keysvc: the body, and who holds root_custodian right now (active people)."""

    eligible: list[str] = Field(default_factory=list, max_length=1000)


class RekeyRootCall(InitCustodyCall):
    pass


class EnrolCustodianKey(Strict):
    """A root custodian's own X25519 public key (the CLI keeps the private half on their machine)."""

    public_key: str = Field(description="Base64 raw X25519 public key; your root share is sealed to it (HPKE)")

    @field_validator("public_key")
    @classmethod
    def _x25519(cls, value: str) -> str:
        return raw32_base64(value, "public_key")


SHARE_PURPOSES = ("unseal", "rekey-verify")


class TransportKeyRequest(Strict):
    """Which submission the transport key is for: the unseal round (opened if none is) or the pending re-key."""

    purpose: Literal["unseal", "rekey-verify"]


class SealedShare(Strict):
    """One custodian's share sealed to keysvc's transport key (see shared/crypto/shares.py).
    SECURITY: a plaintext share is refused; the sealed one is never logged, stored or put into events."""

    sealed_share: str = Field(description="HPKE enc || ciphertext, base64, sealed to the transport key with "
                              "info 'strongroom share submission v1' NUL purpose NUL round_id",
                              json_schema_extra=base64_of(1024))
    round_id: str = Field(min_length=1, max_length=100, pattern=r"^[A-Za-z0-9_.:-]+$",
                          description="The unseal round, or the pending re-key's new root fingerprint, "
                                      "as given by POST /v1/custody/transport-key")

    @field_validator("sealed_share")
    @classmethod
    def _b64(cls, value: str) -> str:
        return _base64(value, "sealed_share", max_bytes=1024)


class ImportParamsQuery(Strict):
    """Which import key to offer: RSA-OAEP-3072 (SHA-256) or X25519 for HPKE (RFC 9180, base mode)."""

    wrapping_algorithm: Literal["RSAES_OAEP_SHA_256", "HPKE_X25519_HKDF_SHA256_AES_256_GCM"] = "RSAES_OAEP_SHA_256"


class ImportKey(Strict):
    """Bring your own key: key material wrapped to the service's import public key."""

    name: str = Field(pattern=NAME)
    algorithm: Literal["AES-128", "AES-192", "AES-256"] = "AES-256"
    import_token: str = Field(min_length=10, max_length=100)
    wrapped_key_material: str = Field(description="The raw key wrapped to the import key of `import_token`, base64: "
                                      "RSA-OAEP-SHA256 ciphertext, or HPKE enc || ciphertext",
                                      json_schema_extra=base64_of(1024))
    volume: str | None = Field(default=None, max_length=256)
    exportable: bool = False
    activate: bool = True

    @field_validator("wrapped_key_material")
    @classmethod
    def _b64(cls, value: str) -> str:
        return _base64(value, "wrapped_key_material", max_bytes=1024)


class ExportKey(Strict):
    """Export a key version, wrapped (RSA-OAEP-SHA256) to the caller's RSA public key (DER, base64)."""

    public_key: str = Field(description="RSA public key, SubjectPublicKeyInfo DER, base64 (2048..4096 bits)",
                            json_schema_extra=base64_of(2048))
    key_version: int | None = Field(default=None, ge=1)

    @field_validator("public_key")
    @classmethod
    def _b64(cls, value: str) -> str:
        return _base64(value, "public_key", max_bytes=2048)


# --- RPC params: the path's key id with the body under its name ---------------------------------


class SetMinDecryptionVersionCall(KeyRef):
    change: SetMinDecryptionVersion


class ScheduleDestructionCall(KeyRef):
    schedule: ScheduleDestruction


class ApproveDestructionCall(KeyRef):
    approve: ApproveDestruction


class CancelDestructionCall(KeyRef):
    cancel: CancelDestruction


class ExportKeyCall(KeyRef):
    export: ExportKey


class ReleaseRef(Strict):
    """One device's request, as the device that made it asks for its outcome."""

    request_id: str
    device_id: str


# --- RPC results (JSON exactly as the gateway has always passed on) ------------------------------


class DeviceDependency(Reply):
    device_id: str
    releases: int
    last_release_at: str
    versions: list[int]


class DependencyReport(Reply):
    """Which devices received the key within the window (from the release ledger)."""

    key_id: str
    window_days: int
    releases: int
    devices: list[DeviceDependency]


class DestructionView(Reply):
    """A scheduled destruction (times ISO 8601); the certificate once it ran."""

    key_id: str
    destruction_id: str
    scheduled_by: str
    scheduled_at: str
    not_before: str
    reason: str
    status: str
    approvals: list[str]
    forced: bool
    dependent_releases: int
    cancelled_by: str | None = None
    destroyed_at: str | None = None
    certificate: dict[str, Any] | None = None
    signature: str | None = None
    dependencies: DependencyReport | None = None
    ready: bool | None = None
    waiting_for: str | None = None


class CertificateView(Reply):
    certificate: dict[str, Any]
    signature: str
    signing_key_id: str
    algorithm: str
    canonicalization: str


class OffboardingView(Reply):
    """A tenant's offboarding in keysvc: shredding, then shredded with its signed certificate."""

    tenant_id: str
    offboarding_id: str
    status: Literal["shredding", "shredded"]
    keys_destroyed: int
    kek_versions_shredded: list[int]
    wrapped_blobs_shredded: int
    certificate_id: str
    certificate: dict[str, Any]
    signature: str
    signing_key_id: str
    shredded_at: str | None


class SigningKeyView(Reply):
    algorithm: str
    key_id: str
    public_key: str
    public_key_format: str
    use: str


class RekeyView(Reply):
    status: str | None
    new_fingerprint: str | None
    previous_fingerprint: str | None
    threshold: int | None
    started_at: str | None
    expires_at: str | None
    switched_at: str | None
    verified_shares: int


class UnsealProgress(Reply):
    submitted: int
    needed: int | None


class CustodyStatus(Reply):
    sealed: bool
    initialized: bool
    root_fingerprint: str | None
    threshold: int | None
    custodians: int | None
    generation: int | None
    rekey: RekeyView | None
    unseal_progress: UnsealProgress


class CustodianShare(Reply):
    """Which custodian holds share number `number`, and the fingerprint of the key it is sealed to."""

    custodian_id: str
    number: int
    key_id: str


class CustodyInitialized(Reply):
    root_fingerprint: str
    threshold: int
    shares: int
    custodians: list[CustodianShare]
    note: str


class RekeyStarted(Reply):
    new_fingerprint: str
    root_fingerprint: str | None
    threshold: int
    shares: int
    custodians: list[CustodianShare]
    expires_at: str
    note: str


class CustodianKey(Reply):
    custodian_id: str
    key_id: str
    enrolled_at: str


class CustodianKeys(Reply):
    items: list[CustodianKey]


class SealedDelivery(Reply):
    """One custodian's new share sealed to their enrolled key, signed by keysvc (see shared/crypto/shares.py)."""

    purpose: str
    root_fingerprint: str
    custodian_id: str
    number: int
    recipient_public_key: str
    sealed_share: str
    signature: str
    signing_public_key: str
    signing_key_id: str
    suite: str


class TransportKey(Reply):
    purpose: str
    round_id: str
    expires_at: str
    public_key: str
    signature: str
    signing_public_key: str
    signing_key_id: str
    suite: str


class UnsealResult(Reply):
    sealed: bool
    submitted: int
    needed: int


class RekeyVerified(Reply):
    verified: bool
    submitted: int
    needed: int
    root_fingerprint: str | None = None
    previous_fingerprint: str | None = None


class RekeyCancelled(Reply):
    cancelled: str
    root_fingerprint: str


class KekRotationView(Reply):
    rotation_id: str
    from_version: int
    to_version: int
    status: str
    rewrapped: int
    total: int
    started_at: str
    started_by: str
    cursor: Any = None
    updated_at: str | None = None
    finished_at: str | None = None


class KekStatus(Reply):
    kek_version: int | None
    rotation: KekRotationView | None


class ImportParams(Reply):
    """A single-use import key, its token and the key id it will create (valid for 24 hours)."""

    import_token: str
    tenant_id: str
    key_id: str
    wrapping_algorithm: str
    key_size: int
    public_key: str
    public_key_format: str
    expires_at: str
    hpke: dict[str, str] | None = None
    hpke_info: str | None = None


class ExportedKey(Reply):
    key_id: str
    key_version: int
    algorithm: str
    wrapping_algorithm: str
    wrapped_key_material: str


class ReleaseRecord(Reply):
    request_id: str
    outcome: str
