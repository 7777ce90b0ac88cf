"""policysvc's settings from the environment (STRONGROOM_POLICYSVC_X, else STRONGROOM_X: shared/config.py)."""

from __future__ import annotations

from pydantic_settings import SettingsConfigDict

from shared.config import CommonSettings


class PolicySettings(CommonSettings):
    model_config = SettingsConfigDict(env_prefix="STRONGROOM_POLICYSVC_", extra="ignore")
