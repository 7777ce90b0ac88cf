"""Data keys and sealed secrets: AES-256-GCM (shared/crypto/envelope.py) over the few secrets a
service must read back (TOTP secrets, SSO client secrets, forwarder signing secrets), so the store
never holds them in clear.

Each sealed value is bound by its associated data to the sealing service, its purpose, tenant
and owner: a sealed secret copied onto another owner's document, or into another tenant, does
not open.
"""

from __future__ import annotations

import base64
import os
import secrets
from pathlib import Path

from . import envelope
from .envelope import SecretBytes

DATA_KEY_BYTES = envelope.KEK_BYTES
_PREFIX = "sealed:v1:"


class DataKeyError(Exception):
    """The data key file is missing, unreadable or malformed (never says anything about the key)."""


def ensure_data_key_file(path: str | os.PathLike[str]) -> Path:
    """Development and tests: create a random 0600 key file if there is none; returns its path."""
    target = Path(path)
    if not target.exists():
        target.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return target  # another process made it first: use theirs
        with os.fdopen(fd, "wb") as f:
            f.write(secrets.token_bytes(DATA_KEY_BYTES))
    return target


def load_data_key(path: str | None, *, setting: str, seals: str) -> SecretBytes:
    """The key in `path`; `setting` and `seals` name the variable and what it protects, for errors."""
    if not path:
        raise DataKeyError(f"{setting} is required: a {DATA_KEY_BYTES}-byte key that seals {seals} at rest "
                           "(`strongroom dev` generates one)")
    target = Path(path)
    try:
        if os.name == "posix" and target.stat().st_mode & 0o077:
            raise DataKeyError(f"{target} is readable by group or others; chmod 600 it")
        raw = target.read_bytes()
    except OSError as exc:
        raise DataKeyError(f"cannot read the data key file {target}: {exc.strerror}") from None
    if len(raw) != DATA_KEY_BYTES:
        raise DataKeyError(f"{target} does not hold a {DATA_KEY_BYTES}-byte key")
    return SecretBytes(raw)


class SecretSealer:
    """Seals short text secrets for the store; `service` is whose key it is, `purpose` names what
    they are, `owner` whose."""

    def __init__(self, key: SecretBytes, *, service: str):
        self._key = key
        self._service = service

    def seal(self, value: str, *, purpose: str, tenant_id: str, owner: str) -> str:
        blob = envelope.wrap(self._key, value.encode(), aad=self._aad(purpose, tenant_id, owner))
        return _PREFIX + base64.b64encode(blob).decode()

    def open(self, sealed: str, *, purpose: str, tenant_id: str, owner: str) -> str:
        """The secret, or UnwrapError if it was not sealed for this purpose, tenant and owner."""
        if not sealed.startswith(_PREFIX):
            # SECURITY: a value in clear is never accepted as if it had been sealed.
            raise envelope.UnwrapError("the stored value is not sealed")
        blob = base64.b64decode(sealed[len(_PREFIX):])
        return envelope.unwrap(self._key, blob, aad=self._aad(purpose, tenant_id, owner)).decode()

    def _aad(self, purpose: str, tenant_id: str, owner: str) -> bytes:
        return envelope.aad_for(self._service, purpose, tenant_id, owner)

    def __repr__(self) -> str:
        return "SecretSealer(<key hidden>)"
