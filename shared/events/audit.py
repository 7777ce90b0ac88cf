"""Events of audit checkpoints, archives, retention and forwarders."""

from __future__ import annotations

from typing import Any, Literal

from .base import Event

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
