"""A running service's heartbeat: a small JSON file `strongroom serve` rewrites while it is connected.

`strongroom health --service NAME` reads it, so a container runtime has a liveness check for the
services that serve no HTTP. A file older than a few beats means the service is stuck or cut off.
"""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

BEAT_SECONDS = 5.0
STALE_AFTER_SECONDS = 30.0


def heartbeat_path(service: str, configured: str = "") -> Path:
    return Path(configured) if configured else Path(tempfile.gettempdir()) / f"strongroom-{service}.heartbeat"


def write(path: Path, document: dict[str, Any]) -> None:
    """Atomically: a reader never sees half a file."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(document), encoding="utf-8")
    os.replace(tmp, path)


async def beat(path: Path, identity: dict[str, Any], connected: Callable[[], bool]) -> None:
    """Rewrites `path` every BEAT_SECONDS while `connected()`; runs until cancelled."""
    while True:
        if connected():
            write(path, {**identity, "at": time.time()})
        await asyncio.sleep(BEAT_SECONDS)


def check(path: Path, *, max_age: float = STALE_AFTER_SECONDS, now: float | None = None) -> tuple[bool, str]:
    """(alive, why): alive when the file exists, parses, and was written within `max_age` seconds."""
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
        age = (time.time() if now is None else now) - float(document["at"])
    except FileNotFoundError:
        return False, f"no heartbeat at {path} (not started, or not connected to the broker yet)"
    except (OSError, ValueError, KeyError, TypeError) as exc:
        return False, f"unreadable heartbeat at {path}: {type(exc).__name__}"
    if age > max_age:
        return False, f"last heartbeat {age:.0f} s ago (more than {max_age:.0f} s): stuck or cut off from the broker"
    return True, f"{document.get('service')} {document.get('instance')} alive ({age:.0f} s ago)"
