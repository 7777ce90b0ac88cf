"""Settings from the environment, one class per service over a common base.

Nothing else reads `os.environ`. Secrets are `SecretStr` so they never print.
"""

from __future__ import annotations

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


class PolicySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_POLICYSVC_", extra="ignore")


class KeySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_KEYSVC_", extra="ignore")

    # Production: a passphrase-sealed root key file. Dev: a generated key file in the data dir.
    root_key_file: str | None = None
    root_key_passphrase: SecretStr | None = None
    key_cache_size: int = 10_000


class AuditSettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_AUDITSVC_", extra="ignore")

    batch_size: int = 256
    batch_wait_seconds: float = 0.02
