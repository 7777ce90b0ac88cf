"""Root of trust: Shamir (SLIP-39) shares and passphrase-sealed files for the root key, and where keysvc loads it from."""

from __future__ import annotations

import base64
import binascii
import contextlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import shamir_mnemonic
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import hmac as crypto_hmac
from cryptography.hazmat.primitives.kdf.scrypt import Scrypt

from shared.crypto.envelope import UnwrapError, aad_for, unwrap, wrap

__all__ = [
    "ROOT_KEY_BYTES",
    "GeneratedRootKey",
    "RootKeyError",
    "RootKeySource",
    "SealError",
    "SealedFileRootKey",
    "ShareError",
    "UnsealProgress",
    "Unsealer",
    "combine_shares",
    "fingerprint",
    "seal_root_key",
    "share_set_id",
    "split_root_key",
    "unseal_root_key",
]

ROOT_KEY_BYTES = 32
MAX_SHARES = 16  # SLIP-39 limit

SEAL_FORMAT = "strongroom.sealed-root-key"
SEAL_VERSION = 1
SCRYPT_N = 2**15
SCRYPT_R = 8
SCRYPT_P = 1
SALT_BYTES = 16


class RootKeyError(Exception):
    """The root key could not be produced. Messages never contain key, share or passphrase text."""


class ShareError(RootKeyError):
    """Shamir shares are invalid, too few, inconsistent or from different split sets."""


class SealError(RootKeyError):
    """A sealed root key file is malformed, or the passphrase does not open it."""


def fingerprint(root: bytes) -> str:
    """A short one-way check value of a root key, safe to log and compare after unsealing."""
    mac = crypto_hmac.HMAC(_check_root(root), hashes.SHA256())
    mac.update(b"strongroom root key fingerprint v1")
    return mac.finalize()[:8].hex()


def _check_root(root: bytes) -> bytes:
    if not isinstance(root, (bytes, bytearray)) or len(root) != ROOT_KEY_BYTES:
        size = len(root) if isinstance(root, (bytes, bytearray)) else type(root).__name__
        raise RootKeyError(f"a root key is {ROOT_KEY_BYTES} bytes; got {size}")
    return bytes(root)


# --- Shamir m-of-n --------------------------------------------------------------------------


def split_root_key(
    secret: bytes, *, threshold: int, shares: int, passphrase: bytes = b""
) -> list[str]:
    """Split the root key into `shares` SLIP-39 mnemonics of which any `threshold` recover it."""
    secret = _check_root(secret)
    if not 1 <= shares <= MAX_SHARES:
        raise ShareError(f"share count must be between 1 and {MAX_SHARES}; got {shares}")
    if not 1 <= threshold <= shares:
        raise ShareError(f"threshold must be between 1 and the share count {shares}; got {threshold}")
    if threshold == 1 and shares > 1:
        # SLIP-39 forbids it: every share would be the whole secret in disguise.
        raise ShareError("a threshold of 1 with several shares is not allowed; use 1-of-1 or threshold >= 2")
    try:
        groups = shamir_mnemonic.generate_mnemonics(
            group_threshold=1, groups=[(threshold, shares)], master_secret=secret, passphrase=passphrase
        )
    except ValueError as exc:
        raise ShareError(str(exc)) from None
    return list(groups[0])


def _parse_share(mnemonic: str, position: int) -> shamir_mnemonic.Share:
    if not isinstance(mnemonic, str) or not mnemonic.strip():
        raise ShareError(f"share {position} is empty")
    try:
        share = shamir_mnemonic.Share.from_mnemonic(mnemonic)
    except shamir_mnemonic.MnemonicError as exc:
        # The library quotes the share's first words; report only what kind of damage it is.
        text = str(exc).lower()
        if "checksum" in text:
            what = "its checksum does not match (a mistyped, missing or corrupted word)"
        elif "word" in text:
            what = "it contains a word outside the SLIP-39 word list"
        elif "length" in text or "padding" in text:
            what = "it has the wrong number of words"
        else:
            what = "it is not a valid SLIP-39 share"
        raise ShareError(f"share {position} is invalid: {what}") from None
    if share.group_count != 1 or share.group_threshold != 1:
        raise ShareError(f"share {position} belongs to a multi-group SLIP-39 set, which is not supported")
    return share


class _ShareSet:
    """Validated shares of one split set, keyed by member index."""

    def __init__(self) -> None:
        self.by_index: dict[int, shamir_mnemonic.Share] = {}

    @property
    def threshold(self) -> int | None:
        first = next(iter(self.by_index.values()), None)
        return None if first is None else first.member_threshold

    def add(self, share: shamir_mnemonic.Share, position: int) -> bool:
        """Add a share; False when the identical share is already in."""
        first = next(iter(self.by_index.values()), None)
        if first is not None and first.group_parameters() != share.group_parameters():
            raise ShareError(
                f"share {position} comes from a different split set than the shares before it"
            )
        held = self.by_index.get(share.index)
        if held is not None:
            if held == share:
                return False
            raise ShareError(
                f"share {position} has the same member number as another share but different content; "
                "one of them is corrupted"
            )
        self.by_index[share.index] = share
        return True

    def combine(self, passphrase: bytes) -> bytes:
        needed = self.threshold or 0
        if len(self.by_index) < needed or not self.by_index:
            raise ShareError(f"too few shares: {len(self.by_index)} of {needed} needed")
        # SLIP-39 combines exactly `threshold` shares; any of them will do.
        chosen = [self.by_index[i].mnemonic() for i in sorted(self.by_index)[:needed]]
        try:
            secret = shamir_mnemonic.combine_mnemonics(chosen, passphrase)
        except shamir_mnemonic.MnemonicError:
            raise ShareError(
                "the shares do not combine: their digest does not match, so one is corrupted "
                "or they were not split together"
            ) from None
        return secret


def combine_shares(shares: list[str], passphrase: bytes = b"") -> bytes:
    """Recover the root key from at least threshold shares of one set (identical duplicates are ignored).

    A wrong SLIP-39 passphrase yields a different key rather than an error: compare the
    result's fingerprint() with a recorded one when that matters.
    """
    share_set = _ShareSet()
    for position, mnemonic in enumerate(shares, start=1):
        share_set.add(_parse_share(mnemonic, position), position)
    return share_set.combine(passphrase)


def share_set_id(mnemonic: str) -> int:
    """The random identifier every share of one split carries (not secret: it is in each share's words)."""
    return _parse_share(mnemonic, 1).identifier


@dataclass(frozen=True)
class UnsealProgress:
    """How far an unseal has come: `needed` is known once the first share is in."""

    submitted: int
    needed: int | None

    @property
    def complete(self) -> bool:
        return self.needed is not None and self.submitted >= self.needed


class Unsealer:
    """Collects operators' shares one at a time and yields the root key once enough are in.

    After yielding the key (or failing to combine) it forgets every share, ready for a new round.
    """

    def __init__(self, *, passphrase: bytes = b"", expected_fingerprint: str | tuple[str, ...] | None = None) -> None:
        self._passphrase = passphrase
        # Several during a root re-key that is switched but not finished: old or new shares will do.
        self._expected = (expected_fingerprint,) if isinstance(expected_fingerprint, str) else expected_fingerprint
        self._shares = _ShareSet()

    @property
    def progress(self) -> UnsealProgress:
        return UnsealProgress(submitted=len(self._shares.by_index), needed=self._shares.threshold)

    def submit(self, share: str) -> bytes | None:
        """Add one share; returns the root key when this share completes the threshold, else None.

        Raises ShareError for a damaged share or one from another set; the shares already in stay.
        """
        position = len(self._shares.by_index) + 1
        self._shares.add(_parse_share(share, position), position)
        if not self.progress.complete:
            return None
        try:
            root = self._shares.combine(self._passphrase)
        finally:
            self.reset()
        if self._expected is not None and not any(hmac.compare_digest(fingerprint(root), fp) for fp in self._expected):
            raise ShareError(
                "the shares combined into a key with the wrong fingerprint: "
                "wrong passphrase, or shares of another root key"
            )
        return root

    def reset(self) -> None:
        """Forget every submitted share."""
        self._shares = _ShareSet()

    def __repr__(self) -> str:
        p = self.progress
        return f"Unsealer(submitted={p.submitted}, needed={p.needed})"


# --- passphrase-sealed file -------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _seal_aad(n: int, r: int, p: int, salt_b64: str) -> bytes:
    # The KDF parameters are authenticated so a file edited to weaker ones fails to open.
    return aad_for(SEAL_FORMAT, str(SEAL_VERSION), "scrypt", str(n), str(r), str(p), salt_b64)


def _derive(passphrase: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return Scrypt(salt=salt, length=32, n=n, r=r, p=p).derive(passphrase.encode("utf-8"))


def seal_root_key(root: bytes, passphrase: str) -> bytes:
    """Encrypt the root key under a scrypt-derived key; returns the JSON file content."""
    root = _check_root(root)
    if not passphrase:
        raise SealError("a sealing passphrase must not be empty")
    salt = secrets.token_bytes(SALT_BYTES)
    salt_b64 = _b64(salt)
    kek = _derive(passphrase, salt, SCRYPT_N, SCRYPT_R, SCRYPT_P)
    document = {
        "format": SEAL_FORMAT,
        "version": SEAL_VERSION,
        "kdf": {"name": "scrypt", "n": SCRYPT_N, "r": SCRYPT_R, "p": SCRYPT_P, "salt": salt_b64},
        "cipher": "AES-256-GCM",
        "ciphertext": _b64(wrap(kek, root, aad=_seal_aad(SCRYPT_N, SCRYPT_R, SCRYPT_P, salt_b64))),
    }
    return (json.dumps(document, indent=2) + "\n").encode("utf-8")


def unseal_root_key(blob: bytes, passphrase: str) -> bytes:
    """Open a sealed root key file's content, raising SealError for a malformed file or wrong passphrase."""
    try:
        document: Any = json.loads(blob)
        if document["format"] != SEAL_FORMAT or document["version"] != SEAL_VERSION:
            raise SealError("not a sealed root key file of a supported format and version")
        kdf = document["kdf"]
        if kdf["name"] != "scrypt" or document["cipher"] != "AES-256-GCM":
            raise SealError("the sealed file names an unsupported KDF or cipher")
        n, r, p, salt_b64 = int(kdf["n"]), int(kdf["r"]), int(kdf["p"]), str(kdf["salt"])
        salt = base64.b64decode(salt_b64, validate=True)
        ciphertext = base64.b64decode(document["ciphertext"], validate=True)
    except SealError:
        raise
    except (ValueError, KeyError, TypeError, binascii.Error):
        raise SealError("the sealed root key file is malformed") from None
    # Bounds keep a hostile file from demanding gigabytes of memory.
    if not (2**14 <= n <= 2**20 and n & (n - 1) == 0 and 1 <= r <= 16 and 1 <= p <= 4 and len(salt) >= 16):
        raise SealError("the sealed file's scrypt parameters are out of the accepted range")
    kek = _derive(passphrase, salt, n, r, p)
    try:
        root = unwrap(kek, ciphertext, aad=_seal_aad(n, r, p, salt_b64))
    except UnwrapError:
        raise SealError("wrong passphrase, or the sealed root key file was altered") from None
    return _check_root(root)


# --- sources ----------------------------------------------------------------------------------


@runtime_checkable
class RootKeySource(Protocol):
    """Where keysvc gets its root key.

    load() returns the key, or None when this source cannot produce it by itself (an unseal
    that waits for operators' Shamir shares, see handlers_root.submit_unseal_share). The
    PKCS#11 source (pkcs11.py) keeps an AES key inside the HSM that wraps the root key.
    """

    name: str

    def load(self) -> bytes | None: ...


def _write_private_new(path: Path, data: bytes) -> None:
    """Write a 0600 file that must not exist yet; readers never see it half-written."""
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.link(tmp, path)  # fails if the file exists: never overwrite a root key
    finally:
        tmp.unlink(missing_ok=True)


def _read_private(path: Path) -> bytes:
    if os.name == "posix" and path.stat().st_mode & 0o077:
        raise RootKeyError(f"{path} is readable by group or others; chmod 600 it")
    return path.read_bytes()


class GeneratedRootKey:
    """Development only: a random root key generated on first load and kept in a 0600 file."""

    name = "generated"

    def __init__(self, data_dir: str | os.PathLike[str], *, filename: str = "root.key") -> None:
        self.path = Path(data_dir) / filename

    def load(self) -> bytes:
        if not self.path.exists():
            # Another process may generate it first: then use theirs.
            with contextlib.suppress(FileExistsError):
                _write_private_new(self.path, secrets.token_bytes(ROOT_KEY_BYTES))
        root = _read_private(self.path)
        if len(root) != ROOT_KEY_BYTES:
            raise RootKeyError(f"{self.path} does not hold a {ROOT_KEY_BYTES}-byte root key")
        return root

    def __repr__(self) -> str:
        return f"GeneratedRootKey(path={str(self.path)!r})"


class SealedFileRootKey:
    """A root key sealed under a passphrase in a JSON file (see seal_root_key)."""

    name = "sealed-file"

    def __init__(self, path: str | os.PathLike[str], passphrase: Any) -> None:
        self.path = Path(path)
        # Accept a pydantic SecretStr straight from settings without revealing it here.
        reveal = getattr(passphrase, "get_secret_value", None)
        self._passphrase: str = reveal() if callable(reveal) else passphrase

    def load(self) -> bytes:
        try:
            blob = self.path.read_bytes()  # sealed, so no permission check is needed to stay safe
        except FileNotFoundError:
            raise SealError(f"sealed root key file {self.path} does not exist") from None
        return unseal_root_key(blob, self._passphrase)

    def store(self, root: bytes) -> None:
        """Seal and write the root key; refuses to replace an existing file."""
        try:
            _write_private_new(self.path, seal_root_key(root, self._passphrase))
        except FileExistsError:
            raise SealError(f"sealed root key file {self.path} already exists; not replacing it") from None

    def __repr__(self) -> str:
        return f"SealedFileRootKey(path={str(self.path)!r})"
