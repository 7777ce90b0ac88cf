"""keysvc's release ledger: a sealed key is collectable only once its key.released is queued for audit.

The ledger records the outcome before it is published (idempotency); an agent that polls for its
request reads the ledger. So until the audit copy is confirmed, the recorded release must not be
served, and a release the audit queue refused must never be."""

from __future__ import annotations

import pytest

from services.keysvc import handlers_release
from services.keysvc.store_memory import MemoryKeyStore
from shared import rpc
from shared.bus import AuditRefused
from shared.commands_custody import ReleaseRef
from shared.events import Event, KeyDecided, KeyReleased

TENANT = "ten_a"
DECIDED = KeyDecided(tenant_id=TENANT, request_id="req_1", device_id="dev_1", key_id="key_1", effect="allow",
                     ephemeral_public_key="AAAA")
REF = ReleaseRef(request_id="req_1", device_id="dev_1")
ASKED = rpc.RpcRequest(method="get_release", tenant_id=TENANT)


@pytest.fixture(autouse=True)
def sealed(monkeypatch):
    """The release itself (key custody, HPKE) is not what these tests are about."""
    async def outcome(event: KeyDecided, **_: object) -> KeyReleased:
        return event.caused(KeyReleased, request_id=event.request_id, device_id=event.device_id, key_id=event.key_id,
                            key_version=1, algorithm="AES-256", sealed_key="c2VhbGVk")

    monkeypatch.setattr(handlers_release, "_release_outcome", outcome)


async def _release(store: MemoryKeyStore, publish) -> list[Event]:
    notified: list[Event] = []

    async def notify(event: Event) -> None:
        notified.append(event)

    await handlers_release.release_key(DECIDED, store=store, hierarchy=None, cache=None,  # type: ignore[arg-type]
                                       publish=publish, notify=notify)
    return notified


async def test_a_release_is_not_collectable_while_its_audit_record_is_in_flight():
    store, collected = MemoryKeyStore(), []

    async def publish(event: Event) -> None:  # the audit copy is on its way: the agent polls now
        collected.append(await handlers_release.get_release(ASKED, REF, store=store))

    await _release(store, publish)
    assert collected == [None]
    # Once the audit copy is confirmed, the agent collects its key.
    found = await handlers_release.get_release(ASKED, REF, store=store)
    assert found is not None and '"key.released"' in found.outcome


async def test_a_release_the_audit_queue_refused_is_never_collectable():
    store, collected = MemoryKeyStore(), []

    async def publish(event: Event) -> None:
        collected.append(await handlers_release.get_release(ASKED, REF, store=store))
        raise AuditRefused("audit queue refused key.released: it is full or unavailable")

    notified = await _release(store, publish)
    assert collected == [None]
    assert [e.type for e in notified] == ["key.release_refused"]
    found = await handlers_release.get_release(ASKED, REF, store=store)
    assert found is not None and '"audit_unavailable"' in found.outcome and "sealed_key" not in found.outcome


async def test_a_redelivered_decision_serves_the_recorded_release_only_once_audited():
    store = MemoryKeyStore()

    async def lost(event: Event) -> None:  # the broker went away before confirming the audit copy
        raise ConnectionError("broker gone")

    with pytest.raises(ConnectionError):
        await _release(store, lost)
    assert await handlers_release.get_release(ASKED, REF, store=store) is None

    published: list[Event] = []

    async def publish(event: Event) -> None:
        published.append(event)

    await _release(store, publish)  # the redelivery re-publishes the recorded release, audit first
    assert [e.type for e in published] == ["key.released"]
    assert await handlers_release.get_release(ASKED, REF, store=store) is not None
