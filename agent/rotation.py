"""Rotating encrypted files to a newer key version, crash-safe and idempotent.

Each file whose header names an older version than the target is re-encrypted beside itself:
journal the temporary's name (fsynced) → write the temporary (fresh salt, so a fresh file key and
nonces never used before) → fsync it → rename it over the file → fsync the directory → journal
that it is done. A crash at any point leaves the old or the new file complete under its own name.
The next run, before anything else, deletes the temporaries the journal names (an in-flight file
starts again from its old ciphertext with a new salt); files already at the target are skipped by
their header, so running again finishes the job and running twice changes nothing.

The journal (`.strongroom-rotate.journal`, one JSON object per line) sits at the root of what is
rotated: the directory, or a single file's directory. It is locked while a rotation runs, so two
rotations of one tree cannot interleave, and removed when a run ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from agent.fileformat import ChunkSealer, FileFormatError, FileHeader, decrypt_stream, read_header
from agent.filetree import (
    INTERNAL_PREFIX,
    MODE_BITS,
    Skipped,
    TreeError,
    create_exclusive,
    open_dir,
    open_regular,
    parent_dir,
    scan,
)

JOURNAL_NAME = f"{INTERNAL_PREFIX}rotate.journal"
TEMP_PREFIX = f"{INTERNAL_PREFIX}rotate."
NOT_ENCRYPTED = "not a Strongroom encrypted file"
# Where a crash can be injected in tests, in order; each names the step just completed.
STEPS = ("journaled", "written", "synced", "renamed", "dir_synced", "done")

Hook = Callable[[str], None]


@dataclass(frozen=True)
class Target:
    """What a rotation works on: a root directory and the encrypted files under it, with headers."""

    root: Path
    files: tuple[tuple[str, FileHeader], ...]
    skipped: tuple[Skipped, ...]

    def needed(self, targets: Mapping[str, int]) -> set[tuple[str, int]]:
        """The (key id, version) pairs whose keys rotating to `targets` needs, old and new."""
        pairs = set()
        for _, header in self.files:
            target = targets.get(header.key_id)
            if target is not None and header.key_version < target:
                pairs |= {(header.key_id, header.key_version), (header.key_id, target)}
        return pairs


@dataclass
class RotationReport:
    rotated: list[str] = field(default_factory=list)
    current: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)


def find_encrypted(path: str | os.PathLike[str]) -> Target:
    """The encrypted files at `path` (a file, or a tree walked without following symlinks).

    Files that are not in the format are listed as skipped, not refused: a tree may hold both."""
    path = Path(path)
    if path.is_symlink():
        raise TreeError(f"{path} is a symlink; give the file or directory it points to")
    if path.is_dir():
        root, tree = path, scan(path)
        rels, skipped = [e.rel for e in tree.files], list(tree.skipped)
    elif path.is_file():
        root, rels, skipped = path.parent, [path.name], []
    else:
        raise TreeError(f"{path} is not a regular file or directory")
    files = []
    root_fd = open_dir(root)
    try:
        for rel in rels:
            with parent_dir(root_fd, rel) as (parent, name), open_regular(parent, name) as src:
                try:
                    files.append((rel, read_header(src)))
                except FileFormatError:
                    skipped.append(Skipped(rel, NOT_ENCRYPTED, special=False))
    finally:
        os.close(root_fd)
    if path.is_file() and not files:
        raise TreeError(f"{path} is not a Strongroom encrypted file")
    return Target(root, tuple(files), tuple(skipped))


def rotate(
    target: Target,
    *,
    targets: Mapping[str, int],
    keys: Mapping[tuple[str, int], bytes],
    refused: Mapping[tuple[str, int], str] | None = None,
    hook: Hook | None = None,
) -> RotationReport:
    """Rewrite every file of `target` whose key version is below `targets[key_id]` under that version.

    `keys` holds the data keys by (key id, version); a file whose old or new key is missing fails
    with the reason in `refused`, and the others carry on."""
    hook = hook or (lambda _step: None)
    report = RotationReport()
    root_fd = open_dir(target.root)
    try:
        with _Journal(root_fd, target.root) as journal:
            report.recovered = journal.recover()
            for rel, _ in target.files:
                try:
                    outcome = _rotate_file(root_fd, rel, targets, keys, refused or {}, journal, hook)
                except FileFormatError as exc:
                    report.failed.append((rel, str(exc)))
                    continue
                if outcome is None:
                    report.rotated.append(rel)
                elif outcome == "":
                    report.current.append(rel)
                else:
                    report.failed.append((rel, outcome))
    finally:
        os.close(root_fd)
    return report


def _rotate_file(root_fd, rel, targets, keys, refused, journal: _Journal, hook: Hook) -> str | None:
    """None when rotated, "" when already current, else why the file could not be rotated."""
    with parent_dir(root_fd, rel) as (parent, name), open_regular(parent, name) as src:
        header = read_header(src)  # read again: the file may have changed since it was planned
        to_version = targets.get(header.key_id)
        if to_version is None or header.key_version >= to_version:
            return ""
        for pair in ((header.key_id, header.key_version), (header.key_id, to_version)):
            if pair not in keys:
                reason = (refused or {}).get(pair, "not released")
                return f"key {pair[0]} version {pair[1]}: {reason}"
        mode = os.fstat(src.fileno()).st_mode & MODE_BITS
        temp = f"{TEMP_PREFIX}{secrets.token_hex(8)}.tmp"
        journal.begin(rel, _sibling(rel, temp))
        hook("journaled")
        try:
            with create_exclusive(parent, temp) as dst:
                sealer = ChunkSealer(dst, key=keys[(header.key_id, to_version)], key_id=header.key_id,
                                     key_version=to_version)
                decrypt_stream(src, sealer, key=keys[(header.key_id, header.key_version)], header=header)
                sealer.finish()
                hook("written")
                os.fchmod(dst.fileno(), mode)
                os.fsync(dst.fileno())
            hook("synced")
        except BaseException:
            _unlink_quietly(parent, temp)
            journal.done(rel)
            raise
        os.rename(temp, name, src_dir_fd=parent, dst_dir_fd=parent)
        hook("renamed")
        os.fsync(parent)
        hook("dir_synced")
        journal.done(rel)
        hook("done")
        return None


def _sibling(rel: str, name: str) -> str:
    head, _, _ = rel.rpartition("/")
    return f"{head}/{name}" if head else name


def _unlink_quietly(dir_fd: int, name: str) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(name, dir_fd=dir_fd)


class _Journal:
    """Append-only intent log of in-flight files; every record is fsynced before the step it names."""

    def __init__(self, root_fd: int, root: Path) -> None:
        self._root_fd, self._root = root_fd, root
        flags = os.O_RDWR | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC
        self._fd = os.open(JOURNAL_NAME, flags, 0o600, dir_fd=root_fd)

    def __enter__(self) -> _Journal:
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._fd)
            raise TreeError(f"another rotation is running in {self._root}") from None
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is None:  # a run that ended leaves nothing in flight
                os.unlink(JOURNAL_NAME, dir_fd=self._root_fd)
                os.fsync(self._root_fd)
        finally:
            os.close(self._fd)

    def recover(self) -> list[str]:
        """Delete the temporaries of files a previous run left in flight; return those files."""
        os.lseek(self._fd, 0, os.SEEK_SET)
        data = b""
        while chunk := os.read(self._fd, 1 << 16):
            data += chunk
        in_flight: dict[str, str] = {}
        for line in data.splitlines():
            try:
                record = json.loads(line)
            except ValueError:
                continue  # a torn last record: its temporary was never created
            if not isinstance(record, dict):
                continue
            if record.get("op") == "begin" and _is_our_temp(record.get("temp")):
                in_flight[record["path"]] = record["temp"]
            elif record.get("op") == "done":
                in_flight.pop(record.get("path"), None)
        for temp in in_flight.values():
            try:
                with parent_dir(self._root_fd, temp) as (parent, name):
                    _unlink_quietly(parent, name)
                    os.fsync(parent)
            except (FileNotFoundError, NotADirectoryError):
                pass
        os.ftruncate(self._fd, 0)
        os.fsync(self._fd)
        return sorted(in_flight)

    def begin(self, rel: str, temp: str) -> None:
        self._append({"op": "begin", "path": rel, "temp": temp})

    def done(self, rel: str) -> None:
        self._append({"op": "done", "path": rel})

    def _append(self, record: dict[str, str]) -> None:
        os.write(self._fd, json.dumps(record, sort_keys=True).encode() + b"\n")
        os.fsync(self._fd)


def _is_our_temp(temp: object) -> bool:
    # The journal only ever deletes files it could have created: our prefix, inside the tree.
    if not isinstance(temp, str):
        return False
    parts = temp.split("/")
    return parts[-1].startswith(TEMP_PREFIX) and all(part not in ("", ".", "..") for part in parts)
