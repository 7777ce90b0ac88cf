"""`strongroom keys init DIR`: every key file a deployment needs, each readable by its owner only (0400).

keysvc's root key is sealed under a random passphrase kept in a file beside it; keep an offline
copy of both (or split the root with Shamir shares instead): without them every wrapped key is lost.
"""

from __future__ import annotations

import os
import secrets
from dataclasses import dataclass
from pathlib import Path

from services.auditsvc.signing import ensure_key_file
from services.keysvc.keyfiles import write_signing_key
from services.keysvc.rootkey import ROOT_KEY_BYTES, SealedFileRootKey
from shared.crypto.sealing import ensure_data_key_file

FINAL_MODE = 0o400


@dataclass(frozen=True)
class KeyFile:
    name: str  # file name in the directory
    variable: str  # the setting that names it
    what: str


# One row per file; `strongroom serve` (launch/preflight.py) checks each against its variable.
KEY_FILES = (
    KeyFile("root_key_passphrase", "STRONGROOM_KEYSVC_ROOT_KEY_PASSPHRASE_FILE", "opens the sealed root key"),
    KeyFile("root.key", "STRONGROOM_KEYSVC_ROOT_KEY_FILE", "keysvc's root key, sealed under the passphrase"),
    KeyFile("keysvc_signing.pem", "STRONGROOM_KEYSVC_SIGNING_KEY_FILE", "signs destruction certificates (Ed25519)"),
    KeyFile("audit_signing.pem", "STRONGROOM_AUDITSVC_SIGNING_KEY_FILE", "signs audit checkpoints and archives (Ed25519)"),
    KeyFile("gateway_data.key", "STRONGROOM_GATEWAY_DATA_KEY_FILE", "seals TOTP and SSO client secrets"),
    KeyFile("audit_data.key", "STRONGROOM_AUDITSVC_DATA_KEY_FILE", "seals webhook forwarders' signing secrets"),
)


class KeysExist(Exception):
    """Some of the files are already there: nothing is replaced."""


def init_keys(directory: Path, *, uid: int | None = None, gid: int | None = None) -> list[tuple[KeyFile, Path]]:
    """Creates every file of KEY_FILES in `directory` (0700), mode 0400, owned by `uid`/`gid` when given.

    SECURITY: refuses if any of them exists (a root key is never overwritten), and every file is
    created owner-only from its first byte (O_EXCL, 0600) before it is made read-only."""
    paths = [(spec, directory / spec.name) for spec in KEY_FILES]
    present = [str(path) for _, path in paths if path.exists()]
    if present:
        raise KeysExist(f"not replacing existing key files: {', '.join(present)}")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    files = {spec.name: path for spec, path in paths}
    passphrase = secrets.token_urlsafe(32)
    fd = os.open(files["root_key_passphrase"], os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(passphrase)
    SealedFileRootKey(files["root.key"], passphrase).store(secrets.token_bytes(ROOT_KEY_BYTES))
    write_signing_key(files["keysvc_signing.pem"])
    ensure_key_file(files["audit_signing.pem"])
    ensure_data_key_file(files["gateway_data.key"])
    ensure_data_key_file(files["audit_data.key"])
    for _, path in paths:
        if uid is not None or gid is not None:
            os.chown(path, -1 if uid is None else uid, -1 if gid is None else gid)
        os.chmod(path, FINAL_MODE)
    return paths
