"""Chunk I/O for the file format: fill a reused buffer from any binary stream, write one out whole.

Why: file encryption is a memory-bound loop, and its costs beside AES itself were copies and
allocations (a new `bytes` per read, per lookahead join, per `encrypt`, and Python's own buffer
copy on each side). Reading with `readinto` into one buffer and sealing with `encrypt_into` into
another leaves one copy in and one copy out, as in a plain copy.
"""

from __future__ import annotations

import io
from typing import BinaryIO


class Filler:
    """Fills a caller's buffer from `src`, reading until full or end of stream.

    Uses `readinto` where the stream has it (files, pipes, BytesIO) and `read` otherwise, because a
    raw stream (a pipe, a socket) may return short reads and some only implement `read`."""

    def __init__(self, src: BinaryIO) -> None:
        self._src = src
        self._readinto = getattr(src, "readinto", None)

    def fill(self, view: memoryview) -> int:
        """Read into `view` until it is full or the stream ends; return how many bytes it holds."""
        total, size = 0, len(view)
        while total < size:
            got = self._read_some(view[total:])
            if not got:
                break
            total += got
        return total

    def _read_some(self, view: memoryview) -> int:
        if self._readinto is not None:
            try:
                got = self._readinto(view)
            except (NotImplementedError, io.UnsupportedOperation):
                self._readinto = None
            else:
                return got or 0
        data = self._src.read(len(view))
        if not data:
            return 0
        view[: len(data)] = data
        return len(data)


def write_all(dst: BinaryIO, view: memoryview) -> None:
    """Write all of `view`, looping because a raw file or pipe may accept less than asked."""
    while view:
        written = dst.write(view)
        if written is None:
            raise BlockingIOError("the output is non-blocking and would block")
        view = view[written:]
