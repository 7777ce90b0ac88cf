"""Directory trees for file encryption: a walk that never follows a symlink, and an all-or-nothing
copy of a tree through a per-file transform (encrypt or decrypt), keeping relative paths and modes.

Security invariants: every path component is opened relative to its parent's descriptor with
O_NOFOLLOW, so a symlink (or a directory swapped for one mid-walk) never leads out of the tree;
only regular files are read (a FIFO is never opened for reading, which could block); the output
tree is built in a fresh 0700 directory beside the destination and renamed into place only when
every file has been written and fsynced, so a failure (a tampered file, a full disk) leaves no
partial output and no unauthenticated plaintext behind.
"""

from __future__ import annotations

import errno
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC
# O_NONBLOCK: opening a FIFO that slipped in after the walk must not hang; fstat refuses it next.
_FILE_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
MODE_BITS = 0o777  # set-id and sticky bits are not carried over into files we create
# Names the agent gives its own working files (rotation journal and temporaries); walks skip them.
INTERNAL_PREFIX = ".strongroom-"


class TreeError(ValueError):
    """A tree cannot be processed as asked; raised before anything is written."""


@dataclass(frozen=True)
class Entry:
    """A directory or regular file found by `scan`, by its path relative to the root ('/'-separated)."""

    rel: str
    is_dir: bool
    mode: int


@dataclass(frozen=True)
class Skipped:
    """Something `scan` did not take, and why: a symlink or another non-regular file (`special`), or
    the agent's own working file (a rotation journal or temporary, which is never data)."""

    rel: str
    reason: str
    special: bool = True


@dataclass(frozen=True)
class Scan:
    entries: tuple[Entry, ...]
    skipped: tuple[Skipped, ...]
    root_mode: int

    @property
    def files(self) -> list[Entry]:
        return [e for e in self.entries if not e.is_dir]

    @property
    def special(self) -> list[Skipped]:
        return [s for s in self.skipped if s.special]


def open_dir(path: str | os.PathLike[str]) -> int:
    """A descriptor for a directory given by the user; refuses a symlink in its last component."""
    try:
        return os.open(path, _DIR_FLAGS)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR) and os.path.islink(path):  # O_NOFOLLOW met a symlink
            raise TreeError(f"{path} is a symlink; give the directory it points to") from None
        raise


def scan(root: str | os.PathLike[str]) -> Scan:
    """Walk `root` in name order without following symlinks."""
    root_fd = open_dir(root)
    try:
        entries: list[Entry] = []
        skipped: list[Skipped] = []
        _walk(root_fd, "", entries, skipped)
        return Scan(tuple(entries), tuple(skipped), stat.S_IMODE(os.fstat(root_fd).st_mode) & MODE_BITS)
    finally:
        os.close(root_fd)


def _walk(dir_fd: int, prefix: str, entries: list[Entry], skipped: list[Skipped]) -> None:
    with os.scandir(dir_fd) as listing:
        names = sorted(entry.name for entry in listing)
    for name in names:
        rel = prefix + name
        if name.startswith(INTERNAL_PREFIX):
            skipped.append(Skipped(rel, "the agent's working file", special=False))
            continue
        st = os.stat(name, dir_fd=dir_fd, follow_symlinks=False)
        if stat.S_ISLNK(st.st_mode):
            skipped.append(Skipped(rel, "symlink (not followed)"))
        elif stat.S_ISDIR(st.st_mode):
            entries.append(Entry(rel, True, stat.S_IMODE(st.st_mode) & MODE_BITS))
            child = os.open(name, _DIR_FLAGS, dir_fd=dir_fd)
            try:
                _walk(child, rel + "/", entries, skipped)
            finally:
                os.close(child)
        elif stat.S_ISREG(st.st_mode):
            entries.append(Entry(rel, False, stat.S_IMODE(st.st_mode) & MODE_BITS))
        else:
            skipped.append(Skipped(rel, "not a regular file"))


@contextmanager
def parent_dir(root_fd: int, rel: str) -> Iterator[tuple[int, str]]:
    """(descriptor of the directory holding `rel`, its last name), each step opened with O_NOFOLLOW."""
    *dirs, name = rel.split("/")
    fds: list[int] = []
    try:
        current = root_fd
        for part in dirs:
            current = os.open(part, _DIR_FLAGS, dir_fd=current)
            fds.append(current)
        yield current, name
    finally:
        for fd in reversed(fds):
            os.close(fd)


def open_regular(dir_fd: int, name: str) -> BinaryIO:
    """Open a regular file under `dir_fd` to read, unbuffered; refuses symlinks and special files."""
    fd = os.open(name, _FILE_FLAGS, dir_fd=dir_fd)
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            raise TreeError(f"{name} is no longer a regular file")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb", buffering=0)
    except BaseException:
        os.close(fd)
        raise


def create_exclusive(dir_fd: int, name: str) -> BinaryIO:
    """Create a new 0600 file under `dir_fd` to write, unbuffered; fails if the name exists."""
    fd = os.open(name, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600, dir_fd=dir_fd)
    return os.fdopen(fd, "wb", buffering=0)


def fsync_dir(dir_fd: int) -> None:
    os.fsync(dir_fd)


def transform_tree(
    src_root: str | os.PathLike[str],
    dst_root: str | os.PathLike[str],
    plan: Scan,
    transform: Callable[[str, BinaryIO, BinaryIO], None],
) -> None:
    """Recreate `plan`'s tree of `src_root` at `dst_root` (which must not exist), each file through
    `transform(rel, src, dst)`, with the same relative paths and mode bits. All or nothing."""
    dst_path = Path(dst_root)
    if os.path.lexists(dst_path):
        raise TreeError(f"{dst_path} already exists; give a new path for the output tree")
    src_abs, dst_abs = Path(src_root).resolve(), dst_path.parent.resolve() / dst_path.name
    if dst_abs == src_abs or src_abs in dst_abs.parents:
        raise TreeError(f"{dst_path} is inside {src_root}; put the output tree elsewhere")
    staging = Path(tempfile.mkdtemp(prefix=f"{INTERNAL_PREFIX}{dst_path.name}.", suffix=".partial",
                                    dir=dst_abs.parent))
    try:
        _fill_staging(src_root, staging, plan, transform)
        os.rename(staging, dst_abs)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    parent_fd = os.open(dst_abs.parent, _DIR_FLAGS)
    try:
        fsync_dir(parent_fd)
    finally:
        os.close(parent_fd)


def _fill_staging(src_root, staging: Path, plan: Scan, transform) -> None:
    src_fd, out_fd = open_dir(src_root), open_dir(staging)
    try:
        for entry in plan.entries:
            if entry.is_dir:
                with parent_dir(out_fd, entry.rel) as (parent, name):
                    os.mkdir(name, 0o700, dir_fd=parent)
                continue
            with parent_dir(src_fd, entry.rel) as (src_parent, name), open_regular(src_parent, name) as src, \
                    parent_dir(out_fd, entry.rel) as (out_parent, _), create_exclusive(out_parent, name) as dst:
                transform(entry.rel, src, dst)
                os.fchmod(dst.fileno(), entry.mode)
                os.fsync(dst.fileno())
        # Directory modes last (deepest first), so a read-only directory could still be filled.
        for entry in sorted((e for e in plan.entries if e.is_dir), key=lambda e: e.rel.count("/"), reverse=True):
            with parent_dir(out_fd, entry.rel) as (parent, name):
                child = os.open(name, _DIR_FLAGS, dir_fd=parent)
                try:
                    os.fsync(child)
                    os.fchmod(child, entry.mode)
                finally:
                    os.close(child)
        os.fsync(out_fd)
        os.fchmod(out_fd, plan.root_mode)
    finally:
        os.close(src_fd)
        os.close(out_fd)
