"""The settings every service shares; each service's own class (its `settings.py`) extends it.

Nothing else reads `os.environ`. Secrets are `SecretStr` so they never print.
"""

from __future__ import annotations

from pydantic import AliasChoices, Field
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
