"""Starts the embedded MongoDB-compatible server (SecantusDB) as a child process.

Used by tests and `strongroom dev` when no `MONGODB_URL` is given. SecantusDB is GPL-2.0
and an optional extra: it is only ever run as a separate process, never imported.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pymongo import MongoClient


class EmbeddedMongoError(RuntimeError):
    pass


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _server_command() -> list[str]:
    exe = shutil.which("secantusd-py") or str(Path(sys.executable).with_name("secantusd-py"))
    if not Path(exe).exists():
        raise EmbeddedMongoError(
            "secantusd-py not found: install the embedded store with `pip install -e '.[embedded]'` "
            "or set MONGODB_URL to a MongoDB server"
        )
    return [exe]


class EmbeddedMongo:
    """A SecantusDB server on a free loopback port; `storage` is a directory or ':memory:'."""

    def __init__(self, storage: str | os.PathLike[str] = ":memory:", *, port: int | None = None,
                 cache_size: str | None = None, sync_on_commit: bool = False):
        self.storage = str(storage)
        self.port = port or free_port()
        self.cache_size = cache_size  # the storage engine's cache, e.g. "4G" (the server's default is 1G)
        # Fsync the log on every commit: without it a killed server loses writes it acknowledged.
        self.sync_on_commit = sync_on_commit
        self._process: subprocess.Popen[bytes] | None = None
        self._log = tempfile.TemporaryFile()  # noqa: SIM115 - the server's stdout for its whole life

    @property
    def url(self) -> str:
        # retryWrites=false: with retryable writes PyMongo sends every write with a session
        # transaction number, and SecantusDB keeps each reply in a map (up to 10,000, for 30
        # minutes) that it scans on every write: a quarter of the store's CPU under load, growing
        # as the map fills. They buy nothing here: the map lives in the server's memory, so a
        # crash (the one outage a loopback store has) loses it and a retry after a restart runs
        # again anyway, and a write that times out is never retried. Strongroom's writes are
        # idempotent without them (unique keys, compare-and-swap filters, redelivery).
        return f"mongodb://127.0.0.1:{self.port}/?directConnection=true&retryWrites=false"

    @property
    def pid(self) -> int | None:
        """The server process, while it runs (benchmarks read its CPU time)."""
        return self._process.pid if self._process is not None else None

    def start(self, timeout: float = 30.0) -> EmbeddedMongo:
        if self.storage != ":memory:":
            Path(self.storage).mkdir(parents=True, exist_ok=True)
        # --standalone: no single-node replica set advertised, so no oplog either. The oplog serves
        # change streams and point-in-time restores, neither of which Strongroom uses, and writing
        # it cost the store about a tenth of its CPU per write (WiredTiger's log, which is what
        # brings acknowledged writes back after a crash, is kept).
        cmd = [*_server_command(), "--host", "127.0.0.1", "--port", str(self.port), "--storage-path", self.storage,
               "--log-level", "WARNING", "--standalone",
               *(["--cache-size", self.cache_size] if self.cache_size else []),
               *(["--sync-on-commit"] if self.sync_on_commit else [])]
        self._process = subprocess.Popen(cmd, stdout=self._log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise EmbeddedMongoError(f"embedded store exited early: {self._output()}")
            try:
                with MongoClient(self.url, serverSelectionTimeoutMS=300) as client:
                    client.admin.command("ping")
                return self
            except Exception:
                time.sleep(0.1)
        self.stop()
        raise EmbeddedMongoError(f"embedded store did not start within {timeout:g}s: {self._output()}")

    def _output(self) -> str:
        self._log.seek(0)
        return self._log.read()[-2000:].decode(errors="replace")

    def stop(self) -> None:
        if self._process and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)  # lets WiredTiger checkpoint and close cleanly
            try:
                self._process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process = None

    def kill(self) -> None:
        """SIGKILL, no checkpoint (tests of a store that crashed); `start()` again reopens its data."""
        if self._process and self._process.poll() is None:
            self._process.kill()
            self._process.wait()
        self._process = None

    def __enter__(self) -> EmbeddedMongo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
