"""keysvc's release path: release (or refuse) a decided request, and let an agent collect it.

Idempotent by request id: the outcome is recorded before it is published, and a redelivered
decision re-publishes the recorded outcome (same event id) instead of releasing twice.
"""

from __future__ import annotations

import base64
import contextlib
from collections.abc import Awaitable, Callable

import structlog

from shared import events, rpc
from shared.bus import AuditRefused, PublishRefused
from shared.commands_custody import ReleaseRecord, ReleaseRef
from shared.crypto import release as hpke_release
from shared.crypto.envelope import UnwrapError
from shared.events import Event, KeyDecided, KeyReleased, KeyReleaseRefused

from . import keys as domain
from .cache import KeyCache
from .hierarchy import KeyHierarchy
from .store import KeyStore

log = structlog.get_logger("strongroom.keysvc")
Publish = Callable[[Event], Awaitable[None]]


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
        # SECURITY: the ledger holds the sealed key before its audit record is queued; until
        # then an agent polling for its request must not be served it (see `get_release`).
        "pending_audit": isinstance(outcome, KeyReleased),
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
    else:
        if isinstance(outcome, KeyReleased):
            await store.mark_release_audited(event.tenant_id, event.request_id)
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


async def get_release(request: rpc.RpcRequest, ref: ReleaseRef, *, store: KeyStore) -> ReleaseRecord | None:
    """The recorded outcome (released, sealed to the request's one-time key, or refused) of one
    request by one device; None while nothing is recorded, or while a release waits for its audit
    record to be queued. Scoped to the asking device."""
    doc = await store.find_device_release(request.tenant_id, ref.request_id, ref.device_id)
    return None if doc is None else ReleaseRecord(request_id=doc["request_id"], outcome=doc["outcome"])
