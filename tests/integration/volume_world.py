"""A key source and a volume registry held in memory, for volume tests that need no server: the
data keys are given directly, the LUKS layer under test is the real cryptsetup on image files."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Mapping
from typing import Any

from agent import luks
from agent.client import KeyNotActive, ReleasedKey

GATEWAY = "https://gateway.test"


class LocalKeys:
    """Data key versions of one key id; `requests` records what was asked (never the keys)."""

    def __init__(self, key_id: str = "k-vol", versions: int = 1) -> None:
        self.key_id = key_id
        self.versions = {n: os.urandom(32) for n in range(1, versions + 1)}
        self.requests: list[tuple[str, int | None, Mapping[str, str] | None]] = []
        self.inactive: set[int] = set()  # versions the "server" refuses to release

    def rotate(self) -> int:
        version = max(self.versions) + 1
        self.versions[version] = os.urandom(32)
        return version

    async def __call__(self, key_id: str, key_version: int | None, volume: Mapping[str, str] | None) -> ReleasedKey:
        self.requests.append((key_id, key_version, volume))
        version = key_version or max(self.versions)
        if version in self.inactive:
            raise KeyNotActive(409, "key version not active", f"version {version} cannot be released")
        return ReleasedKey(key_id=key_id, key_version=version, algorithm="AES-256", request_id=f"r{len(self.requests)}",
                           key=self.versions[version])


class LocalRegistry:
    def __init__(self) -> None:
        self.volumes: dict[str, dict[str, Any]] = {}
        self.escrowed: dict[str, bytes] = {}

    async def register(self, *, key_id: str, key_version: int, luks_uuid: str, device: str,
                       volume_id: str | None = None) -> dict[str, Any]:
        volume_id = volume_id or f"vol-{len(self.volumes) + 1}"
        self.volumes[volume_id] = {"volume_id": volume_id, "key_id": key_id, "key_version": key_version,
                                   "luks_uuid": luks_uuid, "device": device}
        return self.volumes[volume_id]

    async def escrow(self, *, volume_id: str, passphrase: bytes) -> None:
        self.escrowed[volume_id] = passphrase


def image(path, size: str = "32M") -> str:
    subprocess.run(["truncate", "-s", size, str(path)], check=True)
    return str(path)


def header(device: str) -> str:
    """`cryptsetup luksDump` as text: what must not change when an operation is refused."""
    return luks.run(["luksDump", device]).stdout
