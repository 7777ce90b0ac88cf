"""The key hierarchy: root key -> one KEK per tenant -> each data key.

Every wrap is AES-256-GCM with associated data naming what is wrapped (tenant, key id,
version), so a blob moved to another tenant, key or version does not open. Unwrapped
KEKs are kept in memory (bounded) because releases need them on every request.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

from shared.crypto.envelope import SecretBytes, aad_for, generate_key, unwrap, wrap

from .store import KeyStore


class Sealed(Exception):
    """Custody has no root key yet: nothing can be wrapped or released."""


def data_key_aad(tenant_id: str, key_id: str, version: int) -> bytes:
    return aad_for("data-key", tenant_id, key_id, str(version))


def kek_aad(tenant_id: str, kek_version: int) -> bytes:
    return aad_for("kek", tenant_id, str(kek_version))


class KeyHierarchy:
    def __init__(self, store: KeyStore, *, root_key: bytes | None, cache_size: int = 1024):
        self._store = store
        self._root = SecretBytes(root_key) if root_key is not None else None
        self._keks: OrderedDict[tuple[str, int], SecretBytes] = OrderedDict()
        self._cache_size = cache_size

    @property
    def sealed(self) -> bool:
        return self._root is None

    def unseal(self, root_key: bytes) -> None:
        self._root = SecretBytes(root_key)

    def _root_key(self) -> SecretBytes:
        if self._root is None:
            raise Sealed("key custody is sealed")
        return self._root

    async def current_kek(self, tenant_id: str) -> tuple[int, SecretBytes]:
        """The tenant's newest KEK, created on first use (races settle on the unique index)."""
        doc = await self._store.current_kek(tenant_id)
        if doc is None:
            kek = generate_key(256)
            wrapped = wrap(self._root_key(), kek, aad=kek_aad(tenant_id, 1))
            await self._store.insert_kek(tenant_id, 1, wrapped, datetime.now(UTC))
            doc = await self._store.current_kek(tenant_id)
            assert doc is not None
        version = doc["kek_version"]
        return version, self._remember(tenant_id, version, doc["wrapped"])

    async def kek(self, tenant_id: str, version: int) -> SecretBytes:
        cached = self._keks.get((tenant_id, version))
        if cached is not None:
            self._keks.move_to_end((tenant_id, version))
            return cached
        doc = await self._store.kek(tenant_id, version)
        if doc is None:
            raise LookupError(f"tenant KEK version {version} missing")
        return self._remember(tenant_id, version, doc["wrapped"])

    def _remember(self, tenant_id: str, version: int, wrapped: bytes) -> SecretBytes:
        kek = SecretBytes(unwrap(self._root_key(), bytes(wrapped), aad=kek_aad(tenant_id, version)))
        self._keks[(tenant_id, version)] = kek
        while len(self._keks) > self._cache_size:
            self._keks.popitem(last=False)
        return kek

    async def new_data_key(self, tenant_id: str, key_id: str, version: int, bits: int) -> tuple[bytes, int]:
        """Generates a data key and returns it wrapped, with the KEK version that wraps it."""
        kek_version, kek = await self.current_kek(tenant_id)
        data_key = generate_key(bits)
        return wrap(kek, data_key, aad=data_key_aad(tenant_id, key_id, version)), kek_version

    async def open_data_key(self, tenant_id: str, key_id: str, version: int, wrapped: bytes, kek_version: int) -> bytes:
        kek = await self.kek(tenant_id, kek_version)
        return unwrap(kek, wrapped, aad=data_key_aad(tenant_id, key_id, version))

    def forget_tenant(self, tenant_id: str) -> None:
        for entry in [k for k in self._keks if k[0] == tenant_id]:
            del self._keks[entry]
