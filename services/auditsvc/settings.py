"""auditsvc's settings from the environment (STRONGROOM_AUDITSVC_X, else STRONGROOM_X: shared/config.py)."""

from __future__ import annotations

from pydantic import field_validator
from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings, per_service

from .destinations import Allowed, parse_allowlist


class AuditSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_AUDITSVC_", extra="ignore")

    # Records written to the store per batch at most.
    batch_size: int = 256
    # A batch closes at batch_size events or this long after its first. Ingestion is off the
    # release path (a release waits for its record to be queued, not stored), so waiting a little
    # longer for fuller batches costs audit latency only and saves the store the five writes each
    # batch costs (records, search terms, spans, chain head, and the duplicate check's read).
    batch_wait_seconds: float = 0.1
    # --- audit exports, forwarders, reports ---
    # Ed25519 private key (PEM, PKCS#8) that signs chain checkpoints; `strongroom dev` generates
    # one in its data dir; `strongroom serve` needs it (`strongroom keys init` makes it). Elsewhere,
    # without it auditsvc signs with a key that lives only until it stops.
    signing_key_file: str | None = per_service()
    # 32 random bytes (a 0600 file) that seal webhook forwarders' signing secrets in the store;
    # `strongroom serve` needs it (`strongroom keys init` makes it); elsewhere, without it auditsvc seals
    # with a key that lives only until it stops (`strongroom dev` makes one).
    data_key_file: str | None = per_service()
    # Sign a chain checkpoint at least every this many records.
    checkpoint_every_records: int = 1000
    # SECURITY: records after the newest signed checkpoint can be deleted leaving no trace in the
    # store; signing at least this often while records arrive (checked every tick, at most 1 s)
    # bounds that unsigned tail in time. `audit verify` catches a cut within it only from outside
    # evidence: the reported head, forwarder cursors, a checkpoint kept elsewhere.
    checkpoint_every_seconds: float = 10.0
    # Readiness fails while audit ingestion lags more than this (records waiting in the broker
    # that long); releases still queue their records, so this says auditsvc needs attention.
    ready_max_lag_seconds: float = 60.0
    # How often forwarders look for new records.
    forwarder_poll_seconds: float = 0.2
    # Records sent per forwarder batch.
    forwarder_batch_size: int = 500
    # Longest wait between retries of a failing forwarder destination.
    forwarder_max_backoff_seconds: float = 60.0
    # How long one instance holds a forwarder before another may take it over.
    forwarder_lease_seconds: float = 30.0
    # SECURITY: forwarders never reach loopback, private, link-local, multicast, reserved or cloud
    # metadata addresses (destinations.py), except those this provider-level allowlist names:
    # comma-separated `ADDRESS[/PREFIX][:PORT]`, e.g. "10.1.2.3:6514,[fd00::/8]:514". Tenants
    # cannot set it; a malformed entry stops auditsvc at start.
    forwarder_allow: str = ""
    # Rolling online window (a tenant may set its own); older records are archived, then removed.
    retention_days: int = 365
    # How often the retention job archives and removes old records.
    retention_interval_seconds: float = 3600.0
    # Where archives of expired records are written; must be writable (a volume in a container).
    archive_dir: str = "audit-archive"
    # Bytes per message of an archive download (the gateway streams the chunks).
    archive_chunk_bytes: int = 512 * 1024

    @field_validator("forwarder_allow")
    @classmethod
    def _allowlist(cls, value: str) -> str:
        parse_allowlist(value)
        return value

    @property
    def forwarder_allowlist(self) -> tuple[Allowed, ...]:
        return parse_allowlist(self.forwarder_allow)
