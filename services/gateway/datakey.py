"""The gateway's data key (shared/crypto/sealing.py): TOTP secrets and an OIDC client secret are
sealed at rest under it, bound to their purpose, tenant and owner."""

from __future__ import annotations

from shared.crypto import sealing
from shared.crypto.envelope import SecretBytes
from shared.crypto.sealing import DataKeyError, ensure_data_key_file

__all__ = ["DATA_KEY_BYTES", "DataKeyError", "SecretSealer", "ensure_data_key_file", "load_data_key"]

DATA_KEY_BYTES = sealing.DATA_KEY_BYTES


def load_data_key(path: str | None) -> SecretBytes:
    return sealing.load_data_key(path, setting="STRONGROOM_GATEWAY_DATA_KEY_FILE", seals="TOTP and SSO client secrets")


class SecretSealer(sealing.SecretSealer):
    def __init__(self, key: SecretBytes):
        super().__init__(key, service="strongroom.gateway")
