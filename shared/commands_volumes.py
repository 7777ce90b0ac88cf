"""Request contracts of the volume area: the agent's registration and escrow bodies, the operator's
break-glass request, and the keysvc and policysvc RPC params and results they become."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Literal

from pydantic import Field, field_validator

from .commands import Reply, Strict, base64_of, raw32_base64

# The server names new volumes vol_<hex>; an agent may name one itself (its LUKS token's volume_id).
VOLUME_ID = r"^[A-Za-z0-9][A-Za-z0-9_.:-]{0,99}$"
LUKS_UUID = r"^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
# HPKE enc (32) + AEAD tag (16) + a passphrase of at most 1024 bytes.
MAX_SEALED_PASSPHRASE_BYTES = 32 + 16 + 1024
# Break-glass needs this many approvals from people other than the requester.
RECOVERY_APPROVALS = 2


def _sealed(value: str, what: str) -> str:
    try:
        raw = base64.b64decode(value, validate=True)
    except ValueError:
        raise ValueError(f"{what} must be base64") from None
    if not 49 <= len(raw) <= MAX_SEALED_PASSPHRASE_BYTES:
        raise ValueError(f"{what} must be 49..{MAX_SEALED_PASSPHRASE_BYTES} bytes")
    return value


class VolumeRef(Strict):
    """What a key request names of the volume it unlocks (the agent's `volume` field)."""

    volume_id: str = Field(pattern=VOLUME_ID)
    luks_uuid: str | None = Field(default=None, pattern=LUKS_UUID)


class RegisterVolume(Strict):
    """A LUKS2 volume this device formatted or bound under a key; it is bound to this device's instance."""

    volume_id: str | None = Field(default=None, pattern=VOLUME_ID, description="Re-bind this volume; new if absent")
    key_id: str = Field(min_length=1, max_length=100)
    key_version: int = Field(ge=1, le=2**63 - 1)
    luks_uuid: str = Field(pattern=LUKS_UUID)
    device: str = Field(min_length=1, max_length=256, pattern=r"^/[^\x00]*$", description="Block device or image path")


class EscrowRecovery(Strict):
    """The recovery passphrase sealed by the agent to keysvc's single-use escrow key (HPKE)."""

    escrow_token: str = Field(pattern=r"^esc_[0-9a-f]{32}$")
    # At least enc, tag and one byte: 49 bytes, 68 base64 characters.
    sealed_passphrase: str = Field(json_schema_extra={**base64_of(MAX_SEALED_PASSPHRASE_BYTES), "minLength": 68})

    @field_validator("sealed_passphrase")
    @classmethod
    def _check(cls, value: str) -> str:
        return _sealed(value, "sealed_passphrase")


class RecoveryRequest(Strict):
    """Break-glass: ask for a volume's recovery passphrase, sealed to a one-time X25519 key of yours."""

    reason: str = Field(min_length=1, max_length=500)
    public_key: str = Field(description="One-time X25519 public key, base64 of the raw 32 bytes",
                            json_schema_extra=base64_of(32, exactly=True))

    @field_validator("public_key")
    @classmethod
    def _x25519(cls, value: str) -> str:
        return raw32_base64(value, "public_key")


# --- keysvc ------------------------------------------------------------------------------


class EscrowKeyCall(Strict):
    volume_id: str = Field(pattern=VOLUME_ID)
    device_id: str = Field(min_length=1, max_length=100)


class EscrowKey(Reply):
    """A single-use X25519 key to seal the passphrase to; the HPKE info is the agent's to compute."""

    volume_id: str
    escrow_token: str
    public_key: str
    hpke_suite: str
    expires_at: datetime


class EscrowCall(EscrowRecovery):
    volume_id: str = Field(pattern=VOLUME_ID)
    device_id: str = Field(min_length=1, max_length=100)


class Escrowed(Reply):
    volume_id: str
    escrowed_at: datetime
    replaced: bool


class RecoveryReleaseCall(Strict):
    volume_id: str = Field(pattern=VOLUME_ID)
    request_id: str = Field(min_length=1, max_length=100)


class RecoveryRelease(Reply):
    """The passphrase sealed to the requester's one-time key; `hpke_info` is for them to recompute."""

    volume_id: str
    request_id: str
    sealed_passphrase: str
    hpke_suite: str
    approvers: list[str]


# --- policysvc ---------------------------------------------------------------------------


class OpenRecoveryApproval(Strict):
    volume_id: str = Field(pattern=VOLUME_ID)
    key_id: str
    device_id: str
    public_key: str
    reason: str = Field(min_length=1, max_length=500)


class RecoveryApprovalRef(Strict):
    volume_id: str = Field(pattern=VOLUME_ID)
    request_id: str = Field(min_length=1, max_length=100)


class RecoveryApproval(Reply):
    """What keysvc needs of a break-glass approval: whose it is, its one-time key, its state."""

    request_id: str
    approval_id: str
    volume_id: str
    requested_by: str
    public_key: str
    status: Literal["pending", "approved", "denied", "expired"]
    approvers: list[str]
    approvals_required: int
    approvals_received: int
    expires_at: datetime
