"""keysvc's key cache: bounded LRUs of whole keys and of release views, per instance."""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol

from shared.cache_drops import Drops

from . import keys as domain


class KeySource(Protocol):
    async def load_key(self, tenant_id: str, key_id: str) -> domain.Key | None: ...

    async def load_release_view(self, tenant_id: str, key_id: str) -> domain.ReleaseView | None: ...


class KeyCache:
    """Bounded LRUs of keys and of release views; entries are replaced on local writes and dropped on
    others' events. Both are bounded, so memory does not grow with the number of keys.

    A read from the store that was in flight when a drop arrived may hold the key as it was before
    the change: it answers its caller but is not cached, or the stale copy would outlive the event
    that dropped it (see `shared.cache_drops`)."""

    def __init__(self, store: KeySource, size: int):
        self._store = store
        self._size = size
        self._keys: OrderedDict[tuple[str, str], domain.Key] = OrderedDict()
        self._views: OrderedDict[tuple[str, str], domain.ReleaseView] = OrderedDict()
        self._drops = Drops()

    async def get(self, tenant_id: str, key_id: str) -> domain.Key | None:
        entry = (tenant_id, key_id)
        key = self._keys.get(entry)
        if key is not None:
            self._keys.move_to_end(entry)
            return key
        mark = self._drops.mark()
        key = await self._store.load_key(tenant_id, key_id)
        if key is not None and self._drops.unchanged(mark):
            self._keep(key)
        return key

    async def for_release(self, tenant_id: str, key_id: str, version: int | None) -> domain.Key | domain.ReleaseView | None:
        """The key as a release needs it: a whole cached key, else for the latest version a release
        view (a miss costs one indexed read of the head), else the whole key."""
        entry = (tenant_id, key_id)
        key = self._keys.get(entry)
        if key is not None:
            self._keys.move_to_end(entry)
            return key
        view = self._views.get(entry)
        if view is not None:
            self._views.move_to_end(entry)
        else:
            mark = self._drops.mark()
            view = await self._store.load_release_view(tenant_id, key_id)
            if view is None:
                return await self.get(tenant_id, key_id)
            if self._drops.unchanged(mark):
                self._views[entry] = view
                while len(self._views) > self._size:
                    self._views.popitem(last=False)
        if version is None or version == view.latest_version:
            return view
        return await self.get(tenant_id, key_id)

    def put(self, key: domain.Key) -> None:
        """A key this instance just wrote: a read in flight holds an older copy and must not replace it."""
        self._drops.note()
        self._keep(key)

    def _keep(self, key: domain.Key) -> None:
        self._keys[(key.tenant_id, key.key_id)] = key
        self._views.pop((key.tenant_id, key.key_id), None)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def drop(self, tenant_id: str, key_id: str) -> None:
        self._drops.note()
        self._keys.pop((tenant_id, key_id), None)
        self._views.pop((tenant_id, key_id), None)

    def drop_tenant(self, tenant_id: str) -> None:
        self._drops.note()
        for cached in (self._keys, self._views):
            for entry in [k for k in cached if k[0] == tenant_id]:
                del cached[entry]

    def __len__(self) -> int:
        return len(self._keys) + len(self._views)
