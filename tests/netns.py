"""A private network namespace for tests that change a real firewall ruleset without touching the box's.

`unshare --net=FILE` keeps the namespace alive by bind-mounting it on FILE; `nsenter --net=FILE`
runs a command inside it (the agent's firewall collector does the same with its netns setting).
"""

from __future__ import annotations

import contextlib
import subprocess
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def private_netns(directory: Path) -> Iterator[Path]:
    handle = directory / "netns"
    handle.touch()
    subprocess.run(["unshare", f"--net={handle}", "true"], check=True)
    try:
        yield handle
    finally:
        subprocess.run(["umount", str(handle)], check=False)


def nft(handle: Path, *args: str) -> None:
    """Run ``nft ARGS`` inside the namespace, failing the test if nft refuses."""
    subprocess.run(["nsenter", f"--net={handle}", "nft", *args], check=True, capture_output=True)
