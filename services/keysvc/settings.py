"""keysvc's settings from the environment (STRONGROOM_KEYSVC_X, else STRONGROOM_X: shared/config.py)."""

from __future__ import annotations

from pydantic import SecretStr
from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings, per_service


class KeySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_KEYSVC_", extra="ignore")

    # Production: a passphrase-sealed root key file (`strongroom keys init` makes one). Dev: a generated key file in the data dir.
    root_key_file: str | None = None
    # Opens `root_key_file`; required with it (keysvc refuses to start with the file alone).
    root_key_passphrase: SecretStr | None = None
    # A file holding that passphrase (a docker or Kubernetes secret), read when the variable is unset.
    root_key_passphrase_file: str | None = None
    # Unwrapped data-key versions kept in memory per instance.
    key_cache_size: int = 10_000
    # --- key custody: destruction certificates, schedulers, root sources ---
    # Ed25519 private key (PEM, PKCS#8) that signs destruction certificates: `strongroom serve` needs
    # the file (`strongroom keys init` makes it); in-process stacks generate it if missing.
    signing_key_file: str | None = per_service()
    # Production floor of a destruction's waiting period (7 days); test stacks may lower it.
    min_destruction_wait_seconds: int = 7 * 86400
    # How often scheduled work (rotations, destructions, re-wraps) is looked for.
    scheduler_interval_seconds: float = 5.0
    # How long one instance holds a scheduler lease before another may take it over.
    lease_seconds: float = 30.0
    # Keys re-wrapped per batch when a tenant key-encryption key rotates.
    kek_rewrap_batch: int = 500
    kek_rewrap_pause_seconds: float = 0.0  # throttle between re-wrap batches to limit store load
    # Root re-key: the outgoing root is retired this long after the switch (every instance picks up
    # the new root meanwhile); a re-key whose new shares are not verified within the TTL is rolled back.
    root_rekey_grace_seconds: float = 60.0
    # A root re-key whose new shares are not verified within this is rolled back.
    root_rekey_ttl_seconds: float = 86400.0
    # Development and tests only: allow a 1-of-1 root (init or re-key with one custodian holding the
    # whole root). Off by default: the threshold is at least 2.
    allow_single_custodian: bool = False
    # PKCS#11 root source: the HSM holds an AES key that wraps the root key (see rootkey.py).
    # Path of the PKCS#11 module (.so) of the HSM holding the root-wrapping key.
    pkcs11_module: str | None = None
    # Label of the HSM token.
    pkcs11_token_label: str | None = None
    # User PIN of the HSM token.
    pkcs11_pin: SecretStr | None = None
    # Label of the AES key on the token that wraps the root key.
    pkcs11_key_label: str = "strongroom-root-wrap"
    # The root key wrapped by the HSM key (created at first start).
    pkcs11_wrapped_root_file: str | None = None
