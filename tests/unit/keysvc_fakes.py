"""What the keysvc handler unit tests share: the in-memory store, a root key, an outbox that records."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from services.keysvc.cache import KeyCache
from services.keysvc.hierarchy import KeyHierarchy
from services.keysvc.store_memory import MemoryKeyStore
from shared.events import Actor, Event
from shared.rpc import RpcRequest

TENANT = "ten_unit"


@dataclass
class RecordingOutbox:
    """Publishes staged events by recording them with the area they were staged in."""

    published: list[tuple[Any, Event]] = field(default_factory=list)

    async def publish(self, collection: Any, tenant_id: str, event: Event) -> None:
        self.published.append((collection, event))

    def types(self) -> list[str]:
        return [e.type for _, e in self.published]


@dataclass
class Keysvc:
    store: MemoryKeyStore
    hierarchy: KeyHierarchy
    cache: KeyCache
    outbox: RecordingOutbox
    root: bytes

    @property
    def deps(self) -> dict[str, Any]:
        return {"store": self.store, "hierarchy": self.hierarchy, "cache": self.cache, "outbox": self.outbox}

    def restarted(self) -> Keysvc:
        """Another instance (or this one after a crash) over the same store: empty caches."""
        store = self.store
        return Keysvc(store, KeyHierarchy(store, root_key=self.root), KeyCache(store, 16), self.outbox, self.root)


def keysvc() -> Keysvc:
    store = MemoryKeyStore()
    root = secrets.token_bytes(32)
    return Keysvc(store, KeyHierarchy(store, root_key=root), KeyCache(store, 16), RecordingOutbox(), root)


def request(method: str, actor: str = "alice", tenant_id: str = TENANT) -> RpcRequest:
    return RpcRequest(method=method, tenant_id=tenant_id, actor=Actor(kind="user", id=actor))
