"""The key hierarchy: root key -> one KEK per tenant -> each data key.

Every wrap is AES-256-GCM with associated data naming what is wrapped (tenant, key id,
version), so a blob moved to another tenant, key or version does not open. Unwrapped
KEKs are kept in memory (bounded) because releases need them on every request.
"""

from __future__ import annotations

from collections import OrderedDict
from datetime import UTC, datetime

from shared.crypto.envelope import (
    SecretBytes,
    UnwrapError,
    aad_for,
    generate_key,
    unwrap,
    wrap,
)
from shared.rpc import ProblemError

from .rootkey import fingerprint
from .store import KeyStore


class Sealed(Exception):
    """Custody has no root key yet: nothing can be wrapped or released."""


class TenantOffboarded(ProblemError):
    """The tenant is offboarded: its keys are shredded and it gets no new KEK."""

    def __init__(self) -> None:
        super().__init__(409, "Conflict", "the tenant is offboarded; its keys are shredded", "tenant_id")


def data_key_aad(tenant_id: str, key_id: str, version: int) -> bytes:
    return aad_for("data-key", tenant_id, key_id, str(version))


def kek_aad(tenant_id: str, kek_version: int) -> bytes:
    return aad_for("kek", tenant_id, str(kek_version))


def rekey_aad(old_fp: str, new_fp: str) -> bytes:
    return aad_for("root-rekey", old_fp, new_fp)


class KeyHierarchy:
    """Root key(s) in memory, tenant KEKs unwrapped on demand into a bounded cache.

    During a root re-key two roots are held: KEK documents name the root that wraps them
    (`root_fp`, and `next_fp` for the copy wrapped under the incoming root), so releases and
    KEK loads never stop while the KEKs are re-wrapped. The incoming root sits in the root
    record wrapped under the outgoing one (`rekey.sealed_root`) until the re-key finishes, so
    any instance holding the outgoing root can pick it up (`refresh_roots`) and a re-key cut
    short by a crash can be resumed or rolled back.
    """

    def __init__(self, store: KeyStore, *, root_key: bytes | None, cache_size: int = 1024):
        self._store = store
        self._roots: dict[str, SecretBytes] = {}
        self._primary: str | None = None
        self._next: str | None = None  # the incoming root of a pending re-key
        if root_key is not None:
            self.unseal(root_key)
        self._keks: OrderedDict[tuple[str, int], SecretBytes] = OrderedDict()
        self._cache_size = cache_size

    @property
    def sealed(self) -> bool:
        return self._primary is None

    @property
    def root_fingerprint(self) -> str | None:
        return self._primary

    def holds(self, fp: str | None) -> bool:
        return fp is not None and fp in self._roots

    def unseal(self, root_key: bytes) -> None:
        fp = fingerprint(root_key)
        self._roots[fp] = SecretBytes(root_key)
        self._primary = fp

    def add_root(self, root_key: bytes) -> str:
        """Hold another root (the incoming one of a re-key) without making it primary."""
        fp = fingerprint(root_key)
        self._roots[fp] = SecretBytes(root_key)
        return fp

    def hold_incoming(self, root_key: bytes) -> str:
        """Hold the incoming root of a re-key: new KEKs get a copy under it too."""
        self._next = self.add_root(root_key)
        return self._next

    def make_primary(self, fp: str) -> None:
        """New KEKs are wrapped under this (already held) root from now on."""
        if fp not in self._roots:
            raise KeyError("root not held")
        self._primary = fp
        if self._next == fp:
            self._next = None

    def retire_roots_except(self, keep: str) -> None:
        self._primary = keep
        self._next = None
        for fp in [f for f in self._roots if f != keep]:
            del self._roots[fp]

    def seal_incoming(self, old_fp: str, new_fp: str) -> bytes:
        """The incoming root wrapped under the outgoing one, for the root record while a re-key runs."""
        return wrap(self._roots[old_fp], self._roots[new_fp], aad=rekey_aad(old_fp, new_fp))

    def open_sealed_incoming(self, rekey: dict) -> bool:
        """Take the incoming root from a pending re-key record; False when we hold neither root."""
        old_fp, new_fp = rekey["previous_fingerprint"], rekey["new_fingerprint"]
        if new_fp in self._roots:
            return True
        if old_fp not in self._roots or rekey.get("sealed_root") is None:
            return False
        root = unwrap(self._roots[old_fp], bytes(rekey["sealed_root"]), aad=rekey_aad(old_fp, new_fp))
        if fingerprint(root) != new_fp:
            raise UnwrapError("the sealed incoming root does not match its recorded fingerprint")
        self.add_root(root)
        return True

    def follow_root_record(self, doc: dict | None) -> None:
        """Align the roots held with the root record: pick up a pending re-key's incoming root,
        switch primary once the record names it, drop the outgoing root once the re-key is done."""
        if self.sealed or doc is None:
            return
        rekey = doc.get("rekey")
        if rekey is not None:
            if not self.open_sealed_incoming(rekey):
                return
            if doc["fingerprint"] == rekey["new_fingerprint"]:
                self.make_primary(rekey["new_fingerprint"])
            elif self._primary != rekey["new_fingerprint"]:
                self._next = rekey["new_fingerprint"]
        elif self.holds(doc.get("fingerprint")) and (len(self._roots) > 1 or self._primary != doc["fingerprint"]):
            self.retire_roots_except(doc["fingerprint"])

    async def refresh_roots(self) -> None:
        self.follow_root_record(await self._store.root_record())

    def root_key(self, fp: str) -> SecretBytes:
        return self._roots[fp]

    def _root_key(self) -> SecretBytes:
        if self._primary is None:
            raise Sealed("key custody is sealed")
        return self._roots[self._primary]

    def wrap_kek(self, tenant_id: str, version: int, kek: bytes | SecretBytes, *, root_fp: str | None = None) -> bytes:
        root = self._roots[root_fp] if root_fp else self._root_key()
        return wrap(root, kek, aad=kek_aad(tenant_id, version))

    async def current_kek(self, tenant_id: str) -> tuple[int, SecretBytes]:
        """The tenant's newest KEK, created on first use (races settle on the unique index)."""
        doc = await self._store.current_kek(tenant_id)
        if doc is None:
            await self.create_kek(tenant_id, 1)
            doc = await self._store.current_kek(tenant_id)
            assert doc is not None
        version = doc["kek_version"]
        cached = self._keks.get((tenant_id, version))
        if cached is not None:
            return version, cached
        return version, await self._remember(tenant_id, version, doc)

    async def create_kek(self, tenant_id: str, version: int) -> bool:
        """A new KEK version for the tenant; False when it already exists.

        Rare (a tenant's first key, a KEK rotation), so it reads the root record first: while a
        root re-key is pending the KEK is wrapped under both roots, and none is ever written
        under a root that is on its way out only.
        """
        self._root_key()
        # SECURITY: an offboarded tenant's KEKs are shredded for good; none is created again (a
        # create_key that raced the offboarding would otherwise give the tenant a fresh one).
        if await self._store.find_offboarding(tenant_id) is not None:
            raise TenantOffboarded()
        await self.refresh_roots()
        kek = generate_key(256)
        wrapped = self.wrap_kek(tenant_id, version, kek)
        copy = None
        if self._next is not None and self._next != self._primary:
            copy = (self.wrap_kek(tenant_id, version, kek, root_fp=self._next), self._next)
        return await self._store.insert_kek(tenant_id, version, wrapped, datetime.now(UTC), self._primary, copy=copy)

    async def kek(self, tenant_id: str, version: int) -> SecretBytes:
        cached = self._keks.get((tenant_id, version))
        if cached is not None:
            self._keks.move_to_end((tenant_id, version))
            return cached
        doc = await self._store.kek(tenant_id, version)
        if doc is None:
            raise LookupError(f"tenant KEK version {version} missing")
        return await self._remember(tenant_id, version, doc)

    def open_kek_doc(self, doc: dict) -> bytes:
        """Unwrap a KEK document under whichever held root wraps it."""
        tenant_id, version = doc["tenant_id"], doc["kek_version"]
        self._root_key()  # raises Sealed when there is no root at all
        # Documents written before roots were named carry no root_fp: any held root may open them.
        named = [doc["root_fp"]] if doc.get("root_fp") else list(self._roots)
        candidates = [(fp, doc.get("wrapped")) for fp in named] + [(doc.get("next_fp"), doc.get("wrapped_next"))]
        for fp, blob in candidates:
            if fp in self._roots and blob is not None:
                try:
                    return unwrap(self._roots[fp], bytes(blob), aad=kek_aad(tenant_id, version))
                except UnwrapError:
                    continue
        raise LookupError(f"no held root key opens tenant KEK version {version}")

    async def _open_kek_doc_fresh(self, doc: dict) -> bytes:
        try:
            return self.open_kek_doc(doc)
        except LookupError:
            # Another instance re-keyed the root: take the incoming root from the record and retry.
            await self.refresh_roots()
            return self.open_kek_doc(doc)

    async def _remember(self, tenant_id: str, version: int, doc: dict) -> SecretBytes:
        kek = SecretBytes(await self._open_kek_doc_fresh(doc))
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

    def forget_tenant(self, tenant_id: str, *, below: int | None = None) -> None:
        """Drop cached KEKs of a tenant (only versions below `below` when given)."""
        for entry in [k for k in self._keks if k[0] == tenant_id and (below is None or k[1] < below)]:
            del self._keks[entry]

    async def rewrap_data_key(
        self, tenant_id: str, key_id: str, version: int, wrapped: bytes, from_kek: int, to_kek: int
    ) -> bytes:
        """The same data key wrapped under another KEK version of the tenant (KEK rotation)."""
        data_key = await self.open_data_key(tenant_id, key_id, version, wrapped, from_kek)
        return wrap(await self.kek(tenant_id, to_kek), data_key, aad=data_key_aad(tenant_id, key_id, version))

    async def wrap_data_key(self, tenant_id: str, key_id: str, version: int, data_key: bytes) -> tuple[bytes, int]:
        """Wrap a given (imported) data key under the tenant's current KEK."""
        kek_version, kek = await self.current_kek(tenant_id)
        return wrap(kek, data_key, aad=data_key_aad(tenant_id, key_id, version)), kek_version
