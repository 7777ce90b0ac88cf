"""The settings every service shares; each service's own class (its `settings.py`) extends it.

One vocabulary for every setting X of a service S: `STRONGROOM_S_X` if set, else `STRONGROOM_X`,
else the default (`MONGODB_URL` is the conventional last resort for the store's URL). A setting
declared with `per_service()` (a key file two services must not share) reads `STRONGROOM_S_X` only.
docs/configuration.md lists every variable (`strongroom config docs` writes it).

Nothing else reads `os.environ`. Secrets are `SecretStr` so they never print.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import AfterValidator, Field
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    EnvSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from .bus_connection import broker_urls

COMMON_PREFIX = "STRONGROOM_"
# Conventional names read after every STRONGROOM_ one: {field: variable}.
CONVENTIONAL = {"mongodb_url": "MONGODB_URL"}
_PER_SERVICE = "strongroom_per_service"


def per_service(default: Any = None, **kwargs: Any) -> Any:
    """A setting read from `STRONGROOM_<SERVICE>_X` only: one service's own file or secret."""
    return Field(default, json_schema_extra={_PER_SERVICE: True}, **kwargs)


def is_per_service(field: FieldInfo) -> bool:
    extra = field.json_schema_extra
    return isinstance(extra, dict) and bool(extra.get(_PER_SERVICE))


class _CommonEnvSource(EnvSettingsSource):
    """`STRONGROOM_X` for every setting not declared `per_service()`."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls, env_prefix=COMMON_PREFIX)

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        if is_per_service(field):
            return None, field_name, False
        return super().get_field_value(field, field_name)


class _ConventionalSource(PydanticBaseSettingsSource):
    """Names other tools use (`MONGODB_URL`), read last."""

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # unused: __call__ reads the few names directly

    def __call__(self) -> dict[str, Any]:
        fields = self.settings_cls.model_fields
        return {field: os.environ[name] for field, name in CONVENTIONAL.items()
                if field in fields and os.environ.get(name)}



# How long a store call may take before it fails (and the caller answers 503 + Retry-After):
# to find a server it can use (a store that is down or refuses connections), and for the whole
# operation, retries and a cursor's reads included (a store that hangs). Every service's client
# uses them (`shared/store.py`'s `connect`). The operation bound sits below the gateway's RPC
# deadline (`rpc_timeout_seconds`, 10 s), so a service whose store hangs still answers the
# operator 503 rather than the gateway timing out, and far above any query a service runs.
STORE_TIMEOUT_SECONDS = 3.0
STORE_OPERATION_TIMEOUT_SECONDS = 8.0


class CommonSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix=COMMON_PREFIX, extra="ignore")

    # The broker (AMQP URL with credentials: keep it out of shell history), or the nodes of a cluster
    # comma-separated: the bus connects to the first that answers and moves to the next on a failed
    # attempt or a dropped connection (`bus_connection`).
    amqp_url: Annotated[str, AfterValidator(lambda v: ",".join(broker_urls(v)))] = "amqp://guest:guest@127.0.0.1:5672/"
    # The store; MONGODB_URL (the conventional name) is read when no STRONGROOM_ variable is set.
    # Required by `strongroom serve`; `strongroom dev` starts an embedded store without it.
    mongodb_url: str | None = None
    # Names this deployment's exchanges and queues (`strongroom admin teardown --prefix` removes them).
    bus_prefix: str = "strongroom."
    # Names this deployment's databases: `<db_prefix><service>`.
    db_prefix: str = "strongroom_"
    # DEBUG, INFO, WARNING or ERROR; JSON lines when standard error is not a terminal.
    log_level: str = "INFO"
    # How long a caller waits for another service's reply.
    rpc_timeout_seconds: float = 10.0
    # Server selection (and connection) timeout, and the bound on one store operation (PyMongo's
    # timeoutMS): a store that is down or hung makes calls fail within these, answered 503 +
    # Retry-After, never held for the outage.
    store_timeout_seconds: float = STORE_TIMEOUT_SECONDS
    # Bound on one store operation, retries and cursor reads included (PyMongo timeoutMS).
    store_operation_timeout_seconds: float = STORE_OPERATION_TIMEOUT_SECONDS
    # `strongroom serve` rewrites this file every few seconds while its broker connection is up;
    # `strongroom health --service NAME` (a container's liveness check) reads it. Empty: a file
    # named for the service in the temporary directory.
    heartbeat_file: str = ""
    # Liveness, readiness and metrics (shared/observability.py): policysvc, keysvc and auditsvc
    # serve /live, /ready and /metrics on this address when a port is set (0: any free port), off
    # otherwise; the gateway serves /v1/live, /v1/ready and /metrics on its own port.
    health_host: str = "127.0.0.1"
    # The port of that listener (policysvc, keysvc, auditsvc); unset: no listener.
    health_port: int | None = None

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # First wins: arguments, the service's own prefix, the common prefix, conventional names.
        return (init_settings, env_settings, _CommonEnvSource(settings_cls), _ConventionalSource(settings_cls),
                dotenv_settings, file_secret_settings)

    @classmethod
    def service_prefix(cls) -> str:
        return cls.model_config.get("env_prefix") or COMMON_PREFIX


def variables(settings_cls: type[CommonSettings], field_name: str) -> list[str]:
    """The environment variables a setting is read from, first wins (for errors and the docs)."""
    upper = field_name.upper()
    own = f"{settings_cls.service_prefix()}{upper}"
    names = [own]
    if not is_per_service(settings_cls.model_fields[field_name]) and own != COMMON_PREFIX + upper:
        names.append(COMMON_PREFIX + upper)
    if field_name in CONVENTIONAL:
        names.append(CONVENTIONAL[field_name])
    return names
