"""keysvc's handlers: release a decided request, and the operators' key operations.

Each takes its dependencies as keywords, bound once in `app.py`. The release handler is
idempotent by request id: its outcome is recorded before it is published, and a
redelivered decision re-publishes the recorded outcome (same event id) instead of
releasing twice.
"""

from __future__ import annotations

import base64
import contextlib
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

import structlog

from shared import commands, events, rpc
from shared.bus import AuditRefused, PublishRefused
from shared.commands_custody import SetMinDecryptionVersion
from shared.crypto import release as hpke_release
from shared.crypto.envelope import UnwrapError
from shared.events import Event, KeyDecided, KeyReleased, KeyReleaseRefused
from shared.outbox import Outbox
from shared.store import DuplicateKeyError

from . import keys as domain
from .hierarchy import KeyHierarchy, Sealed
from .store import KeyStore, public_view

log = structlog.get_logger("strongroom.keysvc")
Publish = Callable[[Event], Awaitable[None]]


class KeyCache:
    """Bounded LRUs of keys and of release views; entries are replaced on local writes and dropped on
    others' events. Both are bounded, so memory does not grow with the number of keys."""

    def __init__(self, store: KeyStore, size: int):
        self._store = store
        self._size = size
        self._keys: OrderedDict[tuple[str, str], domain.Key] = OrderedDict()
        self._views: OrderedDict[tuple[str, str], domain.ReleaseView] = OrderedDict()

    async def get(self, tenant_id: str, key_id: str) -> domain.Key | None:
        entry = (tenant_id, key_id)
        key = self._keys.get(entry)
        if key is not None:
            self._keys.move_to_end(entry)
            return key
        key = await self._store.load_key(tenant_id, key_id)
        if key is not None:
            self.put(key)
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
            view = await self._store.load_release_view(tenant_id, key_id)
            if view is None:
                return await self.get(tenant_id, key_id)
            self._views[entry] = view
            while len(self._views) > self._size:
                self._views.popitem(last=False)
        if version is None or version == view.latest_version:
            return view
        return await self.get(tenant_id, key_id)

    def put(self, key: domain.Key) -> None:
        self._keys[(key.tenant_id, key.key_id)] = key
        self._views.pop((key.tenant_id, key.key_id), None)
        while len(self._keys) > self._size:
            self._keys.popitem(last=False)

    def drop(self, tenant_id: str, key_id: str) -> None:
        self._keys.pop((tenant_id, key_id), None)
        self._views.pop((tenant_id, key_id), None)

    def drop_tenant(self, tenant_id: str) -> None:
        for cached in (self._keys, self._views):
            for entry in [k for k in cached if k[0] == tenant_id]:
                del cached[entry]

    def __len__(self) -> int:
        return len(self._keys) + len(self._views)


# --- release ------------------------------------------------------------------------


async def release_key(
    event: Event, *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache, publish: Publish, notify: Publish
) -> None:
    """Release (or refuse) a decided request; `publish` queues for audit first, `notify` does not."""
    if not isinstance(event, KeyDecided) or event.effect != "allow":
        return
    # Insert-first idempotency: a redelivered decision loses the insert and re-publishes the
    # recorded outcome, so the hot path costs one write and no read.
    outcome = await _release_outcome(event, hierarchy=hierarchy, cache=cache)
    doc = {
        "request_id": event.request_id,
        "key_id": event.key_id,
        "device_id": event.device_id,
        "released": isinstance(outcome, KeyReleased),
        "key_version": getattr(outcome, "key_version", None),
        "at": outcome.occurred_at,
        "outcome": outcome.model_dump_json(),
    }
    if not await store.record_release(event.tenant_id, doc):
        recorded = await store.find_release(event.tenant_id, event.request_id)
        assert recorded is not None
        outcome = events.decode_event(recorded["outcome"].encode())
    try:
        await publish(outcome)
    except AuditRefused:
        # SECURITY: no key leaves unaudited. The audit copy goes first, so key.released reached no
        # one: the request is refused for good (the ledger says so, a redelivery repeats it), and
        # the agent hears so now instead of waiting out its timeout.
        if isinstance(outcome, KeyReleased):
            outcome = _refusal(event, "audit_unavailable",
                               "the audit log cannot take the record of this release, so no key was released")
            await store.refuse_release(event.tenant_id, event.request_id, outcome.model_dump_json())
        # A refusal releases nothing; if the full audit queue refuses its copy, the others still get it.
        with contextlib.suppress(PublishRefused):
            await notify(outcome)
    if isinstance(outcome, KeyReleased):
        log.info("key_released", key_id=event.key_id, key_version=outcome.key_version, device_id=event.device_id)
    else:
        log.info("key_release_refused", key_id=event.key_id, reason=outcome.reason)


def _refusal(event: KeyDecided, status: str, reason: str) -> KeyReleaseRefused:
    return event.caused(KeyReleaseRefused, request_id=event.request_id, device_id=event.device_id,
                        key_id=event.key_id, status=status, reason=reason)


async def _release_outcome(event: KeyDecided, *, hierarchy: KeyHierarchy, cache: KeyCache) -> Event:
    def refused(status: str, reason: str) -> KeyReleaseRefused:
        return _refusal(event, status, reason)

    if hierarchy.sealed:
        return refused("sealed", "key custody is sealed; operators must unseal it")
    key = await cache.for_release(event.tenant_id, event.key_id, event.key_version)
    if key is None:
        return refused("not_found", f"key {event.key_id} not found")
    ok, why = domain.releasable(key)
    if not ok:
        return refused("not_active", why)
    try:
        if event.key_version is None:
            version = domain.version_for_release(key)
        else:
            version = domain.version_for_decrypt(key, event.key_version)
        public_key = hpke_release.parse_public_key(event.ephemeral_public_key)
    except (domain.VersionError, hpke_release.ReleaseError) as exc:
        return refused("not_active", str(exc))
    assert version.wrapped is not None
    try:
        data_key = await hierarchy.open_data_key(
            event.tenant_id, key.key_id, version.version, version.wrapped, version.kek_version
        )
    except (LookupError, UnwrapError):
        # Our cached copy predates a KEK rotation whose old KEK is now retired: read it afresh.
        cache.drop(event.tenant_id, event.key_id)
        key = await cache.get(event.tenant_id, event.key_id)
        if key is None:
            return refused("not_found", f"key {event.key_id} not found")
        ok, why = domain.releasable(key)
        if not ok:
            return refused("not_active", why)
        fresh = key.versions.get(version.version)
        if fresh is None or fresh.wrapped is None:
            return refused("not_active", f"version {version.version} has no key material")
        data_key = await hierarchy.open_data_key(
            event.tenant_id, key.key_id, fresh.version, fresh.wrapped, fresh.kek_version
        )
    info = hpke_release.release_info(
        tenant_id=event.tenant_id, request_id=event.request_id, key_id=key.key_id, key_version=version.version
    )
    sealed = hpke_release.seal(data_key, public_key, info)
    del data_key
    return event.caused(
        KeyReleased,
        request_id=event.request_id,
        device_id=event.device_id,
        key_id=key.key_id,
        key_version=version.version,
        algorithm=key.algorithm,
        sealed_key=base64.b64encode(sealed).decode(),
        latest_version=key.latest_version,
    )


async def forget_changed_key(event: Event, *, cache: KeyCache) -> None:
    """Another instance changed a key: drop our copy so the next read is fresh."""
    key_id = getattr(event, "key_id", None)
    if key_id:
        cache.drop(event.tenant_id, key_id)


# --- operator operations (request/reply) ----------------------------------------------


def _now() -> datetime:
    return datetime.now(UTC)


async def create_key(
    request: rpc.RpcRequest, cmd: commands.CreateKey, *, store: KeyStore, hierarchy: KeyHierarchy,
    cache: KeyCache, outbox: Outbox,
) -> dict:
    tenant_id = request.tenant_id
    key_id = events.new_id("key_")
    policy = await tenant_settings(store, tenant_id)
    try:
        bits = domain.check_algorithm(cmd.algorithm, min_bits=policy.min_key_bits)
    except domain.KeyPolicyError as exc:
        raise rpc.ProblemError(422, "Unprocessable Content", str(exc), "algorithm") from None
    try:
        wrapped, kek_version = await hierarchy.new_data_key(tenant_id, key_id, 1, bits)
    except Sealed:
        raise rpc.ProblemError(503, "Service Unavailable", "key custody is sealed") from None
    key = domain.new_key(
        tenant_id=tenant_id, key_id=key_id, name=cmd.name, algorithm=cmd.algorithm, wrapped=wrapped,
        kek_version=kek_version, now=_now(), volume=cmd.volume, exportable=cmd.exportable,
        rotation_period_seconds=cmd.rotation_period_seconds,
        initial_state=domain.KeyState.ACTIVE if cmd.activate else domain.KeyState.PRE_ACTIVATION,
    )
    created = events.KeyCreated(
        tenant_id=tenant_id, correlation_id=request.correlation_id, actor=request.actor,
        source_ip=request.source_ip, key_id=key_id, name=cmd.name, algorithm=key.algorithm, volume=cmd.volume,
    )
    try:
        await store.insert_key(key, created)
    except DuplicateKeyError:
        raise rpc.ProblemError(409, "Conflict", f"a key named {cmd.name!r} exists", "name") from None
    cache.put(key)
    await outbox.publish(store.keys.raw, tenant_id, created)
    return public_view(key)


async def _existing(cache: KeyCache, tenant_id: str, key_id: str) -> domain.Key:
    key = await cache.get(tenant_id, key_id)
    if key is None:
        raise rpc.NotFound("key", "key_id")
    return key


async def get_key(request: rpc.RpcRequest, params: dict, *, cache: KeyCache) -> dict:
    return public_view(await _existing(cache, request.tenant_id, str(params.get("key_id", ""))))


async def list_keys(request: rpc.RpcRequest, query: commands.ListQuery, *, store: KeyStore) -> dict:
    heads = await store.list_heads(request.tenant_id, limit=query.limit, after=query.after)
    items = [public_view(h) for h in heads]
    return {"items": items, "next": items[-1]["key_id"] if len(items) == query.limit else None}


async def change_key_state(
    request: rpc.RpcRequest, params: dict, *, store: KeyStore, cache: KeyCache, outbox: Outbox
) -> dict:
    cmd = commands.ChangeKeyState.model_validate(params.get("change", {}))
    key = await _existing(cache, request.tenant_id, str(params.get("key_id", "")))
    try:
        changed, described = domain.transition(key, cmd.action, actor=request.actor.id, reason=cmd.reason, now=_now())
    except domain.IllegalTransition as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc), "action") from None
    changed_event = events.KeyStateChanged(
        tenant_id=request.tenant_id, correlation_id=request.correlation_id, actor=request.actor,
        source_ip=request.source_ip, key_id=key.key_id, from_state=described["from"], to_state=described["to"],
        action=cmd.action, reason=cmd.reason,
    )
    await _save(store, cache, key, changed, changed_event, outbox)
    return public_view(changed)


async def rotate_key(
    request: rpc.RpcRequest, params: dict, *, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache,
    outbox: Outbox,
) -> dict:
    cmd = commands.RotateKey.model_validate(params.get("rotate", {}))
    key = await _existing(cache, request.tenant_id, str(params.get("key_id", "")))
    bits = domain.ALGORITHMS[key.algorithm]
    wrapped, kek_version = await hierarchy.new_data_key(request.tenant_id, key.key_id, key.latest_version + 1, bits)
    try:
        rotated = domain.rotate(key, wrapped_new=wrapped, kek_version=kek_version, now=_now())
    except domain.IllegalTransition as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc)) from None
    rotated_event = events.KeyRotated(
        tenant_id=request.tenant_id, correlation_id=request.correlation_id, actor=request.actor,
        source_ip=request.source_ip, key_id=key.key_id, key_version=rotated.latest_version, reason=cmd.reason,
    )
    await _save(store, cache, key, rotated, rotated_event, outbox)
    return public_view(rotated)


async def _save(
    store: KeyStore, cache: KeyCache, before: domain.Key, after: domain.Key, event: Event, outbox: Outbox
) -> None:
    """Compare-and-swap the key with its event staged in the same write, then publish it."""
    if not await store.save_key(before, after, event):
        cache.drop(before.tenant_id, before.key_id)
        raise rpc.ProblemError(409, "Conflict", "the key changed concurrently; retry")
    cache.put(after)
    await outbox.publish(store.keys.raw, after.tenant_id, event)


async def tenant_settings(store: KeyStore, tenant_id: str) -> domain.CustodySettings:
    """The tenant's key policy (defaults until a custodian sets one)."""
    doc = await store.settings.find_one(tenant_id, {}, projection={"_id": 0, "tenant_id": 0, "_outbox": 0})
    if doc is None:
        return domain.CustodySettings()
    fields = {f: doc[f] for f in ("min_key_bits", "destruction_wait_days", "dependency_window_days", "export_deactivated") if f in doc}
    return domain.CustodySettings(**fields)


async def set_min_decryption_version(
    request: rpc.RpcRequest, params: dict, *, store: KeyStore, cache: KeyCache, outbox: Outbox
) -> dict:
    """Retire old versions: those below min_decryption_version no longer decrypt."""
    cmd = SetMinDecryptionVersion.model_validate(params.get("change", {}))
    key = await _existing(cache, request.tenant_id, str(params.get("key_id", "")))
    try:
        changed = domain.set_min_decryption_version(key, cmd.min_decryption_version, now=_now())
    except domain.VersionError as exc:
        raise rpc.ProblemError(422, "Unprocessable Content", str(exc), "min_decryption_version") from None
    event = events.KeyMinDecryptionVersionSet(
        tenant_id=request.tenant_id, correlation_id=request.correlation_id, actor=request.actor,
        source_ip=request.source_ip, key_id=key.key_id, min_decryption_version=cmd.min_decryption_version,
        reason=cmd.reason,
    )
    await _save(store, cache, key, changed, event, outbox)
    return public_view(changed)


async def rotate_due_keys(*, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache, outbox: Outbox, limit: int = 200) -> int:
    """Automatic rotation: every key whose rotation period has passed gets a new version (scheduler job)."""
    now = _now()
    rotated = 0
    heads = await store.keys.raw.find(
        {"next_rotation_at": {"$lte": now}}, {"tenant_id": 1, "key_id": 1}, limit=limit
    ).to_list(None)
    for head in heads:
        key = await store.load_key(head["tenant_id"], head["key_id"])
        if key is None or not domain.rotation_due(key, now=now):
            continue
        bits = domain.ALGORITHMS[key.algorithm]
        wrapped, kek_version = await hierarchy.new_data_key(key.tenant_id, key.key_id, key.latest_version + 1, bits)
        after = domain.rotate(key, wrapped_new=wrapped, kek_version=kek_version, now=now)
        event = events.KeyRotated(
            tenant_id=key.tenant_id, key_id=key.key_id, key_version=after.latest_version,
            reason=f"automatic rotation (period {key.rotation_period_seconds}s)",
        )
        try:
            await _save(store, cache, key, after, event, outbox)
            rotated += 1
        except rpc.ProblemError:
            continue  # changed concurrently; the next tick looks again
    return rotated
