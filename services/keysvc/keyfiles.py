"""keysvc's key files: the configured root source and the certificate-signing key (created 0600)."""

from __future__ import annotations

import os
from pathlib import Path

import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import SecretStr

from .rootkey import RootKeyError, SealedFileRootKey
from .settings import KeySettings

log = structlog.get_logger("strongroom.keysvc")


def root_key_from_settings(settings: KeySettings) -> bytes | None:
    """The configured root source (sealed file or PKCS#11); None leaves custody sealed until unsealed with shares."""
    passphrase = root_key_passphrase(settings)
    if settings.root_key_file and passphrase:
        return SealedFileRootKey(settings.root_key_file, passphrase).load()
    if settings.root_key_file:  # `strongroom serve` refuses this; an embedding caller hears why it is sealed
        log.warning("keysvc_sealed", reason="STRONGROOM_KEYSVC_ROOT_KEY_FILE is set without its passphrase "
                    "(STRONGROOM_KEYSVC_ROOT_KEY_PASSPHRASE or _PASSPHRASE_FILE)")
    if settings.pkcs11_module and settings.pkcs11_wrapped_root_file:
        from .pkcs11 import Pkcs11RootKey

        return Pkcs11RootKey.from_settings(settings).load()
    return None


def root_key_passphrase(settings: KeySettings) -> SecretStr | None:
    """The passphrase from its variable, else from its file (trailing newline dropped); None if neither."""
    if settings.root_key_passphrase is not None:
        return settings.root_key_passphrase
    if settings.root_key_passphrase_file:
        try:
            text = Path(settings.root_key_passphrase_file).read_text(encoding="utf-8").rstrip("\r\n")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise RootKeyError(f"cannot read the root key passphrase file {settings.root_key_passphrase_file}: "
                               f"{reason}") from None
        return SecretStr(text) if text else None
    return None


def signing_key_from_settings(settings: KeySettings) -> Ed25519PrivateKey:
    """keysvc's certificate-signing key: the PEM file when configured (created 0600 if missing)."""
    if settings.signing_key_file is None:
        log.warning("keysvc_signing_key_ephemeral", hint="set STRONGROOM_KEYSVC_SIGNING_KEY_FILE to keep it across restarts")
        return Ed25519PrivateKey.generate()
    path = Path(settings.signing_key_file)
    if not path.exists():
        write_signing_key(path)
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise RootKeyError(f"{path} does not hold an Ed25519 private key")
    return key


def write_signing_key(path: Path) -> None:
    """A new signing key; SECURITY: created with O_EXCL and mode 0600, never overwriting one."""
    pem = Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
