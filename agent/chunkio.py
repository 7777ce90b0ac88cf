"""Chunk I/O for the file format: fill a reused buffer from any binary stream, write one out whole.

Why: file encryption is a memory-bound loop, and its costs beside AES itself were copies and
allocations (a new `bytes` per read, per lookahead join, per `encrypt`, and Python's own buffer
copy on each side). Reading with `readinto` into one buffer and sealing with `encrypt_into` into
another leaves one copy in and one copy out, as in a plain copy.
"""

from __future__ import annotations

import io
import queue
import threading
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


class RingWriter:
    """Writes chunks to `dst` in order from a ring of reused buffers, on a background thread once a
    stream has more than one chunk; use as a context manager.

    Why: AES-GCM in `cryptography` and file writes both release the GIL, so with a second core the
    write of chunk i overlaps the sealing of chunk i+1 (a one-chunk file is written inline: no
    thread for small files). `take(n)` hands out a writable view of `n` bytes from a free buffer
    (waiting while all are in flight), `put(view, last=...)` queues it. Leaving the block waits for
    every queued write; a write error is raised in the caller's thread at the next `take`/`put` or
    on exit. Leaving by an exception abandons what is still queued."""

    def __init__(self, dst: BinaryIO, capacity: int, ring: int = 3) -> None:
        self._dst = dst
        self._capacity = capacity
        self._free: queue.SimpleQueue[bytearray] = queue.SimpleQueue()
        self._free.put(bytearray(capacity))
        self._spare = ring - 1  # buffers allocated only if the thread starts
        self._queued: queue.SimpleQueue[tuple[bytearray, int] | None] = queue.SimpleQueue()
        self._error: BaseException | None = None
        self._abandon = False
        self._thread: threading.Thread | None = None

    def __enter__(self) -> RingWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._thread is None:
            return
        self._abandon = exc_type is not None
        self._queued.put(None)
        self._thread.join()
        if exc_type is None:
            self._raise_if_failed()

    def take(self, size: int) -> memoryview:
        self._raise_if_failed()
        return memoryview(self._free.get())[:size]

    def put(self, view: memoryview, *, last: bool) -> None:
        self._raise_if_failed()
        if self._thread is None:
            if last:
                write_all(self._dst, view)
                self._free.put(view.obj)
                return
            for _ in range(self._spare):
                self._free.put(bytearray(self._capacity))
            self._thread = threading.Thread(target=self._run, name="chunk-writer", daemon=True)
            self._thread.start()
        self._queued.put((view.obj, len(view)))

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise self._error

    def _run(self) -> None:
        while (item := self._queued.get()) is not None:
            buf, size = item
            if self._error is None and not self._abandon:
                try:
                    write_all(self._dst, memoryview(buf)[:size])
                except BaseException as exc:  # handed over to the caller's thread
                    self._error = exc
            self._free.put(buf)
