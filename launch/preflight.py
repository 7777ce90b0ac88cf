"""What `strongroom serve` checks before it starts: every key file and secret the service needs.

Each problem names the variable to fix and what is wrong with the file (missing, wrong mode,
unreadable, wrong format), never anything the file or secret holds. A service with a problem
does not start: an operator finds out at once, not when the first release fails.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from services.keysvc.keyfiles import root_key_passphrase
from services.keysvc.rootkey import RootKeyError, SealedFileRootKey
from shared.config import CommonSettings, variables
from shared.crypto.sealing import DATA_KEY_BYTES

INIT_HINT = "`strongroom keys init DIR` creates every key file a deployment needs"


@dataclass(frozen=True)
class Problem:
    setting: str  # the variable(s) to fix, first wins
    problem: str


def _var(settings: CommonSettings, field: str) -> str:
    return " or ".join(variables(type(settings), field))


def read_private(path: str) -> bytes | str:
    """The bytes of an owner-only file, or what is wrong with it (no group or other bits: 0600 or 0400)."""
    target = Path(path)
    try:
        mode = target.stat().st_mode
    except FileNotFoundError:
        return f"{target} does not exist ({INIT_HINT})"
    except OSError as exc:
        return f"cannot reach {target}: {exc.strerror}"
    if not target.is_file():
        return f"{target} is not a file"
    if mode & 0o077:
        return f"{target} has mode {mode & 0o777:04o}: others than its owner may use it; chmod 400 it"
    try:
        return target.read_bytes()
    except PermissionError:
        return f"{target} cannot be read by this process (uid {os.getuid()}); chown it to that user"
    except OSError as exc:
        return f"cannot read {target}: {exc.strerror}"


def _file(settings: CommonSettings, field: str, what: str) -> tuple[bytes | None, list[Problem]]:
    path = getattr(settings, field)
    if not path:
        return None, [Problem(_var(settings, field), f"is required: {what} ({INIT_HINT})")]
    content = read_private(path)
    if isinstance(content, str):
        return None, [Problem(_var(settings, field), content)]
    return content, []


def _ed25519(settings: CommonSettings, field: str, what: str) -> list[Problem]:
    content, problems = _file(settings, field, what)
    if content is None:
        return problems
    try:
        key = load_pem_private_key(content, password=None)
    except (ValueError, TypeError):
        key = None
    if not isinstance(key, Ed25519PrivateKey):
        return [Problem(_var(settings, field), f"{getattr(settings, field)} does not hold an unencrypted "
                                               "Ed25519 private key in PEM (PKCS#8)")]
    return []


def _data_key(settings: CommonSettings, field: str, what: str) -> list[Problem]:
    content, problems = _file(settings, field, what)
    if content is not None and len(content) != DATA_KEY_BYTES:
        return [Problem(_var(settings, field), f"{getattr(settings, field)} does not hold a {DATA_KEY_BYTES}-byte key")]
    return problems


def _root_key(settings) -> list[Problem]:
    """A sealed root key file needs its passphrase, and the two must open; neither means sealed at start."""
    has_passphrase = settings.root_key_passphrase is not None or bool(settings.root_key_passphrase_file)
    if not settings.root_key_file:
        if has_passphrase:
            return [Problem(_var(settings, "root_key_file"), "is required with a root key passphrase")]
        return []
    passphrase_vars = f"{_var(settings, 'root_key_passphrase')} (or {_var(settings, 'root_key_passphrase_file')})"
    if not has_passphrase:
        return [Problem(passphrase_vars, f"is required with the sealed root key file {settings.root_key_file}: "
                                         "without it keysvc would start sealed")]
    if settings.root_key_passphrase_file and settings.root_key_passphrase is None:
        content = read_private(settings.root_key_passphrase_file)
        if isinstance(content, str):
            return [Problem(_var(settings, "root_key_passphrase_file"), content)]
    content = read_private(settings.root_key_file)
    if isinstance(content, str):
        return [Problem(_var(settings, "root_key_file"), content)]
    try:
        SealedFileRootKey(settings.root_key_file, root_key_passphrase(settings)).load()
    except RootKeyError as exc:  # messages never hold key or passphrase text
        return [Problem(f"{_var(settings, 'root_key_file')} / {passphrase_vars}", str(exc))]
    return []


def _writable_dir(settings: CommonSettings, field: str) -> list[Problem]:
    target = Path(getattr(settings, field)).absolute()
    try:
        target.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        return [Problem(_var(settings, field), f"cannot create {target}: {exc.strerror}")]
    if not os.access(target, os.W_OK | os.X_OK):
        return [Problem(_var(settings, field), f"{target} is not writable by this process (uid {os.getuid()})")]
    return []


def check(service: str, settings: CommonSettings) -> list[Problem]:
    """Everything `service` cannot start with, in the order an operator would fix it."""
    problems: list[Problem] = []
    if not settings.mongodb_url:
        problems.append(Problem(_var(settings, "mongodb_url"), "is required for `strongroom serve`"))
    if service == "gateway":
        problems += _data_key(settings, "data_key_file", "the key that seals TOTP and SSO client secrets")
    elif service == "keysvc":
        problems += _root_key(settings)
        problems += _ed25519(settings, "signing_key_file", "the Ed25519 key that signs destruction certificates")
    elif service == "auditsvc":
        problems += _ed25519(settings, "signing_key_file", "the Ed25519 key that signs audit checkpoints")
        problems += _data_key(settings, "data_key_file", "the key that seals forwarders' signing secrets")
        problems += _writable_dir(settings, "archive_dir")
    return problems
