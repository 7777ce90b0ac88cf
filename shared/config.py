"""The settings every service shares; each service's own class (its `settings.py`) extends it.

Nothing else reads `os.environ`. Secrets are `SecretStr` so they never print.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator, AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from .bus_connection import broker_urls

# How long a store call may take before it fails (and the caller answers 503 + Retry-After):
# to find a server it can use (a store that is down or refuses connections), and for the whole
# operation, retries and a cursor's reads included (a store that hangs). Every service's client
# uses them (`shared/store.py`'s `connect`). The operation bound sits below the gateway's RPC
# deadline (`rpc_timeout_seconds`, 10 s), so a service whose store hangs still answers the
# operator 503 rather than the gateway timing out, and far above any query a service runs.
STORE_TIMEOUT_SECONDS = 3.0
STORE_OPERATION_TIMEOUT_SECONDS = 8.0


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_", extra="ignore")

    # One broker, or the nodes of a cluster comma-separated: the bus connects to the first that
    # answers and moves to the next on a failed attempt or a dropped connection (`bus_connection`).
    amqp_url: Annotated[str, AfterValidator(lambda v: ",".join(broker_urls(v)))] = "amqp://guest:guest@127.0.0.1:5672/"
    # MONGODB_URL is the conventional name; STRONGROOM_MONGODB_URL works too.
    mongodb_url: str | None = Field(default=None, validation_alias=AliasChoices("MONGODB_URL", "STRONGROOM_MONGODB_URL"))
    bus_prefix: str = "strongroom."
    db_prefix: str = "strongroom_"
    log_level: str = "INFO"
    rpc_timeout_seconds: float = 10.0
    # Server selection (and connection) timeout, and the bound on one store operation (PyMongo's
    # timeoutMS): a store that is down or hung makes calls fail within these, answered 503 +
    # Retry-After, never held for the outage.
    store_timeout_seconds: float = STORE_TIMEOUT_SECONDS
    store_operation_timeout_seconds: float = STORE_OPERATION_TIMEOUT_SECONDS
