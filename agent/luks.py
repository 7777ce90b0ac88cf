"""A thin synchronous wrapper around Debian's `cryptsetup` binary for LUKS2 volumes.

Each function runs one cryptsetup command, which changes the header atomically (LUKS2 keeps two
header copies with a sequence id), so a crash between two calls leaves a valid header.
Security invariant: passphrases reach cryptsetup only through pipes inherited as
``/dev/fd/N`` (``--key-file``/``--new-keyfile``); never argv, never a file on disk, never an error.
Callers in async code run these in a worker thread (``asyncio.to_thread``).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

CIPHER = "aes-xts-plain64"
KEY_SIZE_BITS = 512  # XTS splits it: AES-256 for data, AES-256 for the tweak
# Strongroom and recovery passphrases are 256-bit random strings, so a slow, memory-hard KDF
# buys nothing against guessing; PBKDF2 at cryptsetup's minimum keeps unlock and rotation fast
# (the same choice clevis makes for its generated slot keys).
FAST_PBKDF = ("--pbkdf", "pbkdf2", "--pbkdf-force-iterations", "1000")
MAX_KEYSLOTS = 32
REENCRYPT_REQUIREMENT = "online-reencrypt"
_PIPE_LIMIT = 60_000  # below the kernel's 64 KiB pipe buffer: written whole before cryptsetup starts


class LuksError(Exception):
    """cryptsetup refused or failed; `kind` says which case (used for exit codes)."""

    NO_DEVICE = "no_device"
    NOT_LUKS2 = "not_luks2"
    BAD_PASSPHRASE = "bad_passphrase"
    FAILED = "failed"

    def __init__(self, kind: str, message: str) -> None:
        self.kind = kind
        super().__init__(message)


def cryptsetup_binary() -> str:
    found = shutil.which("cryptsetup") or next(
        (p for p in ("/usr/sbin/cryptsetup", "/sbin/cryptsetup") if os.access(p, os.X_OK)), None)
    if found is None:
        raise LuksError(LuksError.FAILED, "cryptsetup is not installed (apt-get install cryptsetup-bin)")
    return found


@contextlib.contextmanager
def _secret_fds(secrets: Mapping[str, bytes]) -> Iterator[dict[str, int]]:
    """One pipe per secret, already written and closed for writing; yields name -> read fd."""
    fds: dict[str, int] = {}
    try:
        for name, secret in secrets.items():
            if len(secret) > _PIPE_LIMIT:
                raise ValueError("secret too long for a pipe")
            read_fd, write_fd = os.pipe()
            fds[name] = read_fd
            try:
                os.write(write_fd, secret)
            finally:
                os.close(write_fd)
        yield fds
    finally:
        for fd in fds.values():
            os.close(fd)


def _argv(args: Sequence[str], fds: Mapping[str, int]) -> list[str]:
    """`{name}` placeholders become /dev/fd/N paths of the secret pipes."""
    return [cryptsetup_binary(), *(f"/dev/fd/{fds[a[1:-1]]}" if a[1:-1] in fds and a[0] == "{" else a for a in args)]


def run(args: Sequence[str], *, secrets: Mapping[str, bytes] | None = None,
        check: bool = True) -> subprocess.CompletedProcess[str]:
    """Run cryptsetup with `args`; secrets named ``{name}`` in `args` are passed as inherited pipes."""
    with _secret_fds(secrets or {}) as fds:
        done = subprocess.run(_argv(args, fds), pass_fds=tuple(fds.values()), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
    if check and done.returncode != 0:
        raise _error(done.returncode, args, done.stderr)
    return done


def _error(code: int, args: Sequence[str], stderr: str) -> LuksError:
    command = args[0] if args else "cryptsetup"
    message = " ".join(stderr.split())[:300] or f"exit code {code}"
    if code == 2:
        return LuksError(LuksError.BAD_PASSPHRASE, f"cryptsetup {command}: no keyslot opens with that passphrase")
    if code == 4:
        return LuksError(LuksError.NO_DEVICE, f"cryptsetup {command}: {message}")
    return LuksError(LuksError.FAILED, f"cryptsetup {command} failed: {message}")


def require_exists(device: str) -> None:
    if not Path(device).exists():
        raise LuksError(LuksError.NO_DEVICE, f"{device}: no such device or file")


def require_luks2(device: str) -> None:
    """Raise NO_DEVICE or NOT_LUKS2 unless `device` exists and holds a LUKS2 header."""
    require_exists(device)
    if run(["isLuks", device], check=False).returncode != 0:
        raise LuksError(LuksError.NOT_LUKS2, f"{device} is not a LUKS volume")
    if run(["isLuks", "--type", "luks2", device], check=False).returncode != 0:
        raise LuksError(LuksError.NOT_LUKS2, f"{device} is a LUKS1 volume; convert it with cryptsetup convert --type luks2")


def is_luks(device: str) -> bool:
    return run(["isLuks", device], check=False).returncode == 0


def dump(device: str) -> dict[str, Any]:
    """The header's JSON metadata (keyslots, tokens, segments, digests, config); no secrets."""
    return json.loads(run(["luksDump", "--dump-json-metadata", device]).stdout)


def luks_uuid(device: str) -> str:
    return run(["luksUUID", device]).stdout.strip()


def requirements(metadata: Mapping[str, Any]) -> list[str]:
    return list(metadata.get("config", {}).get("requirements", {}).get("mandatory", []))


def reencrypt_interrupted(metadata: Mapping[str, Any]) -> bool:
    return any(r.startswith(REENCRYPT_REQUIREMENT) for r in requirements(metadata))


def keyslots(metadata: Mapping[str, Any]) -> set[int]:
    return {int(slot) for slot in metadata.get("keyslots", {})}


def free_keyslot(metadata: Mapping[str, Any]) -> int:
    used = keyslots(metadata)
    for slot in range(MAX_KEYSLOTS):
        if slot not in used:
            return slot
    raise LuksError(LuksError.FAILED, "no free keyslot left")


def format_volume(device: str, *, uuid: str, passphrase: bytes, keyslot: int = 0) -> None:
    """A new LUKS2 header (aes-xts-plain64, 512-bit key) with one keyslot; destroys what was there."""
    run(["luksFormat", "--type", "luks2", "--batch-mode", "--cipher", CIPHER, "--key-size", str(KEY_SIZE_BITS),
         "--uuid", uuid, *FAST_PBKDF, "--key-slot", str(keyslot), "--key-file", "{new}", device],
        secrets={"new": passphrase})


def add_key(device: str, *, existing: bytes, new: bytes, keyslot: int, existing_slot: int | None = None) -> None:
    """Add `new` in `keyslot`, proving access with `existing` (from `existing_slot` if given)."""
    by_slot = ["--key-slot", str(existing_slot)] if existing_slot is not None else []
    run(["luksAddKey", "--batch-mode", *FAST_PBKDF, *by_slot, "--key-file", "{old}", "--new-keyfile", "{new}",
         "--new-key-slot", str(keyslot), device], secrets={"old": existing, "new": new})


def opens(device: str, passphrase: bytes, keyslot: int | None = None) -> bool:
    """Whether `passphrase` opens `keyslot` (any slot if None): ``open --test-passphrase``, no mapping."""
    by_slot = ["--key-slot", str(keyslot)] if keyslot is not None else []
    done = run(["open", "--test-passphrase", *by_slot, "--key-file", "{key}", device],
               secrets={"key": passphrase}, check=False)
    if done.returncode in (0, 1, 2):
        return done.returncode == 0  # 1: that slot does not exist or is not a passphrase slot
    raise _error(done.returncode, ["open"], done.stderr)


def open_volume(device: str, name: str, passphrase: bytes, keyslot: int | None = None) -> None:
    """Map the volume at /dev/mapper/NAME (needs device-mapper)."""
    by_slot = ["--key-slot", str(keyslot)] if keyslot is not None else []
    run(["open", "--type", "luks2", *by_slot, "--key-file", "{key}", device, name], secrets={"key": passphrase})


def kill_slot(device: str, keyslot: int, remaining: bytes) -> None:
    """Wipe `keyslot`, proving access with the passphrase of a slot that stays."""
    run(["luksKillSlot", "--batch-mode", "--key-file", "{key}", device, str(keyslot)], secrets={"key": remaining})


def import_token(device: str, token_id: int, document: Mapping[str, Any]) -> None:
    """Write (or atomically replace) token `token_id` with `document` (a LUKS2 token JSON object)."""
    payload = json.dumps(dict(document), separators=(",", ":"), sort_keys=True)
    with _secret_fds({"json": payload.encode()}) as fds:  # not secret, but a pipe keeps it off argv and disk
        args = ["token", "import", "--token-id", str(token_id), "--token-replace", "--json-file", "{json}", device]
        done = subprocess.run(_argv(args, fds), pass_fds=tuple(fds.values()), stdin=subprocess.DEVNULL,
                              capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise _error(done.returncode, args, done.stderr)


def remove_token(device: str, token_id: int) -> None:
    run(["token", "remove", "--token-id", str(token_id), device])


def erase(device: str) -> None:
    """Wipe every keyslot (luksErase): the data is unreadable by anyone from now on."""
    run(["luksErase", "--batch-mode", device])


def reencrypt(device: str, passphrase: bytes, *, keyslot: int, resume: bool = False, resilience: str = "checksum",
              hotzone_size: str | None = None, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
    """Re-encrypt the data under a new volume key (offline, in place), or resume an interrupted run.

    Resuming first repairs the interrupted hotzone. Only the slot whose passphrase is given survives
    (cryptsetup may renumber it and updates the tokens that name it); all other keyslots are dropped.
    `progress` receives cryptsetup's ``--progress-json`` records."""
    args = ["reencrypt", "--batch-mode", "--force-offline-reencrypt", "--progress-json", "--progress-frequency", "1",
            "--key-file", "{key}"]
    if resume:
        # A run killed inside a hotzone must first have that hotzone recovered from its journal or
        # checksums ("requires reencryption recovery"); repair does that and is a no-op otherwise.
        run(["repair", "--batch-mode", "--key-file", "{key}", device], secrets={"key": passphrase})
        args.append("--resume-only")
    else:
        args += ["--key-slot", str(keyslot), "--resilience", resilience, *FAST_PBKDF]
        if hotzone_size:
            args += ["--hotzone-size", hotzone_size]
    with _secret_fds({"key": passphrase}) as fds:
        process = subprocess.Popen(_argv([*args, device], fds), pass_fds=tuple(fds.values()),
                                   stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stderr is not None
    other: list[str] = []  # cryptsetup's messages that are not progress records
    with process:
        for line in process.stdout:
            try:
                record = json.loads(line)
            except ValueError:
                other.append(line)
                continue
            if progress is not None and isinstance(record, dict):
                progress(record)
        stderr = process.stderr.read() + "".join(other)
    if process.returncode != 0:
        raise _error(process.returncode, args, stderr)
