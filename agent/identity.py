"""The agent's enrolled identity: who this VM is to Strongroom, and the device key that proves it.

A state directory holds two files:

* ``identity.json``: gateway URL, tenant, device and signature key ids, and the device's public
  key. No secrets.
* ``device.key``: the device's Ed25519 private key, PKCS#8 PEM, mode 0600.

Security invariants: the private key is created on this VM and never leaves it; it is never
logged, printed or shown in a repr; it is never loaded from a file that group or others could
read or write, or that another user owns.
"""

from __future__ import annotations

import base64
import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

IDENTITY_FILE = "identity.json"
DEVICE_KEY_FILE = "device.key"
DEFAULT_STATE_DIR = "~/.strongroom-agent"
FORMAT_VERSION = 1
MAX_FILE_BYTES = 64 * 1024

_IDENTITY_FIELDS = ("gateway_url", "tenant_id", "device_id", "key_id")


class IdentityError(Exception):
    """The state directory holds no usable identity, or one that is unsafe to use; says how to fix it."""


def default_state_dir() -> Path:
    return Path(DEFAULT_STATE_DIR).expanduser()


def generate_device_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def public_key_b64(private_key: Ed25519PrivateKey) -> str:
    """Base64 of the raw 32-byte public key, the form the gateway registers at enrolment."""
    raw = private_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def is_enrolled(state_dir: Path | str) -> bool:
    state = Path(state_dir)
    return (state / IDENTITY_FILE).exists() or (state / DEVICE_KEY_FILE).exists()


@dataclass(frozen=True)
class AgentIdentity:
    """An enrolled device: where its gateway is, who it is, and the key that signs its requests."""

    gateway_url: str
    tenant_id: str
    device_id: str
    key_id: str
    # Security invariant: excluded from repr and comparison so it never reaches a log line.
    private_key: Ed25519PrivateKey = field(repr=False, compare=False)

    @property
    def public_key_b64(self) -> str:
        return public_key_b64(self.private_key)

    def save(self, state_dir: Path | str) -> None:
        """Write the key, then identity.json, refusing to replace an existing identity."""
        state = Path(state_dir)
        state.mkdir(mode=0o700, parents=True, exist_ok=True)
        if is_enrolled(state):
            raise IdentityError(
                f"{state} already holds an agent identity; remove it first to enroll this VM again"
            )
        pem = self.private_key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        key_path = state / DEVICE_KEY_FILE
        # Security invariant: the file is born 0600 (no chmod window) and O_EXCL never reuses a
        # file someone else prepared; the process umask can only narrow the mode further.
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(pem)
                out.flush()
                os.fsync(out.fileno())
            _write_json_atomically(state / IDENTITY_FILE, self._document())
        except BaseException:
            key_path.unlink(missing_ok=True)
            raise

    @classmethod
    def load(cls, state_dir: Path | str) -> AgentIdentity:
        """Read an identity saved by `save`, refusing a device key others could read or replace."""
        state = Path(state_dir)
        identity_path = state / IDENTITY_FILE
        try:
            text = _read_limited(identity_path)
        except FileNotFoundError:
            raise IdentityError(
                f"this VM is not enrolled: no {IDENTITY_FILE} in {state}; run `strongroom-agent enroll`"
            ) from None
        except OSError as exc:
            raise IdentityError(f"cannot read {identity_path}: {exc.strerror or exc}") from None
        try:
            document = json.loads(text)
        except ValueError as exc:
            raise IdentityError(f"{identity_path} is not valid JSON: {exc}") from None
        if not isinstance(document, dict) or document.get("version") != FORMAT_VERSION:
            raise IdentityError(f"{identity_path} is not a version {FORMAT_VERSION} agent identity")
        values = {name: document.get(name) for name in _IDENTITY_FIELDS}
        bad = [name for name, value in values.items() if not isinstance(value, str) or not value]
        if bad:
            raise IdentityError(f"{identity_path} lacks {', '.join(bad)}")

        private_key = _load_device_key(state / DEVICE_KEY_FILE)
        if public_key_b64(private_key) != document.get("public_key"):
            raise IdentityError(
                f"{state / DEVICE_KEY_FILE} does not match the public key in {identity_path}; "
                "the state directory is inconsistent, enroll this VM again"
            )
        return cls(private_key=private_key, **values)

    def _document(self) -> dict[str, object]:
        return {
            "version": FORMAT_VERSION,
            **{name: getattr(self, name) for name in _IDENTITY_FIELDS},
            "public_key": self.public_key_b64,
        }


def _load_device_key(path: Path) -> Ed25519PrivateKey:
    try:
        # O_NOFOLLOW: a symlink could point the agent at a key file whose permissions we never see.
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except FileNotFoundError:
        raise IdentityError(f"device key {path} is missing; enroll this VM again") from None
    except OSError as exc:
        raise IdentityError(f"cannot open device key {path}: {exc.strerror or exc}") from None
    with os.fdopen(fd, "rb") as key_file:
        # fstat on the open descriptor: the file checked is the file read.
        info = os.fstat(key_file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise IdentityError(f"device key {path} is not a regular file")
        mode = stat.S_IMODE(info.st_mode)
        if mode & 0o077:
            raise IdentityError(
                f"device key {path} is accessible to group or others (mode {mode:04o}); "
                f"refusing to use it. Run `chmod 600 {path}` and consider re-enrolling if it may have been copied"
            )
        if hasattr(os, "geteuid") and info.st_uid != os.geteuid():
            raise IdentityError(f"device key {path} belongs to uid {info.st_uid}, not to this user; refusing to use it")
        pem = key_file.read(MAX_FILE_BYTES)
    try:
        private_key = serialization.load_pem_private_key(pem, password=None)
    except (ValueError, TypeError):
        # The library's message is dropped on purpose: nothing about the key's contents is echoed.
        raise IdentityError(f"device key {path} is not an unencrypted PKCS#8 PEM private key") from None
    if not isinstance(private_key, Ed25519PrivateKey):
        raise IdentityError(f"device key {path} is not an Ed25519 key")
    return private_key


def _read_limited(path: Path) -> str:
    with open(path, "rb") as source:
        return source.read(MAX_FILE_BYTES).decode("utf-8", errors="replace")


def _write_json_atomically(path: Path, document: dict[str, object]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            json.dump(document, out, indent=2, sort_keys=True)
            out.write("\n")
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
