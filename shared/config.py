"""Settings from the environment, one class per service over a common base.

Nothing else reads `os.environ`. Secrets are `SecretStr` so they never print.
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", extra="ignore")

    amqp_url: str = "amqp://guest:guest@127.0.0.1:5672/"
    # MONGODB_URL is the conventional name; STRONGROOM_MONGODB_URL works too.
    mongodb_url: str | None = Field(default=None, validation_alias=AliasChoices("MONGODB_URL", "STRONGROOM_MONGODB_URL"))
    bus_prefix: str = "strongroom."
    db_prefix: str = "strongroom_"
    log_level: str = "INFO"
    rpc_timeout_seconds: float = 10.0


class GatewaySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_GATEWAY_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8400
    # Hash of this credential is stored; the credential itself is never stored or logged.
    bootstrap_token: SecretStr | None = None
    release_timeout_seconds: float = 10.0
    max_body_bytes: int = 64 * 1024
    signature_max_age_seconds: int = 300
    enrollment_ttl_seconds: int = 24 * 3600
    # --- accounts and sign-in ---
    # "provider": a provider tenant whose admins run customer tenants; "enterprise": one tenant.
    deployment: Literal["provider", "enterprise"] = "provider"
    enterprise_tenant_name: str = "enterprise"
    # Argon2id (RFC 9106): 64 MiB, 2 passes, 2 lanes is about 60 ms per hash on a 2-core box;
    # at most `password_hash_concurrency` hashes run at once so a login flood queues, not swaps.
    password_time_cost: int = 2
    password_memory_kib: int = 64 * 1024
    password_parallelism: int = 2
    password_hash_concurrency: int = 2
    session_idle_seconds: int = 15 * 60
    session_absolute_seconds: int = 8 * 3600
    setup_token_ttl_seconds: int = 72 * 3600
    lockout_threshold: int = 5
    # Token buckets: (burst, refill per second), per source address and per credential.
    login_rate_burst: int = 60
    login_rate_per_second: float = 1.0
    agent_rate_burst_per_address: int = 20_000
    agent_rate_per_second_per_address: float = 10_000.0
    agent_rate_burst_per_device: int = 2_000
    agent_rate_per_second_per_device: float = 1_000.0
    # Public base URL of the gateway, used for SSO redirect URIs and the SAML audience.
    public_url: str | None = None
    # 32 random bytes (a 0600 file) that seal TOTP secrets and SSO client secrets in the store;
    # required (the gateway does not start without it); every gateway instance uses the same file.
    data_key_file: str | None = None


class PolicySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_POLICYSVC_", extra="ignore")


class KeySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_KEYSVC_", extra="ignore")

    # Production: a passphrase-sealed root key file. Dev: a generated key file in the data dir.
    root_key_file: str | None = None
    root_key_passphrase: SecretStr | None = None
    key_cache_size: int = 10_000
    # --- key custody: destruction certificates, schedulers, root sources ---
    # Ed25519 private key (PEM, PKCS#8) that signs destruction certificates; generated if missing.
    signing_key_file: str | None = None
    # Production floor of a destruction's waiting period (7 days); test stacks may lower it.
    min_destruction_wait_seconds: int = 7 * 86400
    scheduler_interval_seconds: float = 5.0
    lease_seconds: float = 30.0
    kek_rewrap_batch: int = 500
    kek_rewrap_pause_seconds: float = 0.0  # throttle between re-wrap batches to limit store load
    # Root re-key: the outgoing root is retired this long after the switch (every instance picks up
    # the new root meanwhile); a re-key whose new shares are not verified within the TTL is rolled back.
    root_rekey_grace_seconds: float = 60.0
    root_rekey_ttl_seconds: float = 86400.0
    # PKCS#11 root source: the HSM holds an AES key that wraps the root key (see rootkey.py).
    pkcs11_module: str | None = None
    pkcs11_token_label: str | None = None
    pkcs11_pin: SecretStr | None = None
    pkcs11_key_label: str = "strongroom-root-wrap"
    pkcs11_wrapped_root_file: str | None = None


class AuditSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_AUDITSVC_", extra="ignore")

    batch_size: int = 256
    # A batch closes at batch_size events or this long after its first. Ingestion is off the
    # release path (a release waits for its record to be queued, not stored), so waiting a little
    # longer for fuller batches costs audit latency only and saves the store the five writes each
    # batch costs (records, search terms, spans, chain head, and the duplicate check's read).
    batch_wait_seconds: float = 0.1
    # --- audit exports, forwarders, reports ---
    # Ed25519 private key (PEM, PKCS#8) that signs chain checkpoints; `strongroom dev` generates
    # one in its data dir. Without it auditsvc signs with a key that lives only until it stops.
    signing_key_file: str | None = None
    # 32 random bytes (a 0600 file) that seal webhook forwarders' signing secrets in the store;
    # without it auditsvc seals with a key that lives only until it stops (`strongroom dev` makes one).
    data_key_file: str | None = None
    checkpoint_every_records: int = 1000
    checkpoint_every_seconds: float = 60.0
    forwarder_poll_seconds: float = 0.2
    forwarder_batch_size: int = 500
    forwarder_max_backoff_seconds: float = 60.0
    forwarder_lease_seconds: float = 30.0
    # Rolling online window (a tenant may set its own); older records are archived, then removed.
    retention_days: int = 365
    retention_interval_seconds: float = 3600.0
    archive_dir: str = "audit-archive"
    # Bytes per message of an archive download (the gateway streams the chunks).
    archive_chunk_bytes: int = 512 * 1024
