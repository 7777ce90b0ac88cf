"""Running a host tool for a collector: a fixed argv, a timeout, no shell, nothing secret in or out.

A collector's tool is optional on a VM (no ClamAV, no nft, no EFI): `run_tool` answers ``None``
when the program is not installed, so the collector can report the absence as a fact instead of
failing the whole report.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass

DEFAULT_TIMEOUT_SECONDS = 10.0
MAX_OUTPUT_BYTES = 4 * 1024 * 1024
# Tools live in the system directories even when the agent's own PATH (systemd's, a venv's) is short.
SYSTEM_PATH = os.pathsep.join(("/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"))


@dataclass(frozen=True)
class ToolOutput:
    """What a tool printed and how it exited; ``timed_out`` when it was killed at the deadline."""

    returncode: int
    stdout: str
    stderr: str
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.returncode == 0 and not self.timed_out

    def reason(self) -> str:
        """One line for a fact's ``error``: why the tool gave nothing usable."""
        if self.timed_out:
            return "timed out"
        text = " ".join((self.stderr or self.stdout).split())[:200]
        return f"exit status {self.returncode}" + (f": {text}" if text else "")


def find_tool(name: str) -> str | None:
    """The path of program `name` on PATH or in the system directories; None when not installed."""
    return shutil.which(name) or shutil.which(name, path=SYSTEM_PATH)


def run_tool(argv: Sequence[str], *, timeout: float = DEFAULT_TIMEOUT_SECONDS) -> ToolOutput | None:
    """Run `argv` (its first item a program name) with a timeout; None when the program is absent."""
    program = find_tool(argv[0])
    if program is None:
        return None
    env = {"PATH": SYSTEM_PATH, "LC_ALL": "C", "LANG": "C"}  # stable, parseable messages
    try:
        done = subprocess.run(  # a fixed argv chosen by the collector, no shell
            [program, *argv[1:]], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout, env=env,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        return ToolOutput(-1, _text(exc.stdout), _text(exc.stderr), timed_out=True)
    except OSError as exc:
        return ToolOutput(-1, "", exc.strerror or type(exc).__name__)
    return ToolOutput(done.returncode, _text(done.stdout), _text(done.stderr))


def _text(raw: bytes | str | None) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    return raw[:MAX_OUTPUT_BYTES].decode("utf-8", errors="replace")
