"""The root-following loop every keysvc instance runs: registration, unsealing, another instance's re-key."""

from __future__ import annotations

import asyncio

import structlog

from shared.service import stop_if_cancelled

from .hierarchy import KeyHierarchy
from .rekey import unseal_fingerprints
from .store import KeyStore
from .unseal import Unsealing

log = structlog.get_logger("strongroom.keysvc")


async def follow_root(store: KeyStore, hierarchy: KeyHierarchy, unsealing: Unsealing, *, interval: float) -> None:
    """Every instance, every tick: renew its registration, unseal from the round or a hand-off (or hand
    the root on), and keep its roots in line with the root record (another instance's re-key)."""
    while True:
        await asyncio.sleep(interval)
        try:
            await unsealing.register()
            root_doc = await store.root_record()
            if root_doc is not None:
                await unsealing.catch_up(root_doc, unseal_fingerprints(root_doc))
            hierarchy.follow_root_record(root_doc)
        except Exception:  # a store hiccup must not end the loop; the next tick retries
            stop_if_cancelled()
            log.warning("root_follow_failed", exc_info=True)
