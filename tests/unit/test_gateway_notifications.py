"""The gateway's notifier: tenant isolation, type filters, replay after Last-Event-ID, overflow."""

from __future__ import annotations

from services.gateway.auth import Principal
from services.gateway.notifications import NOTIFY_ON_DEMAND, NOTIFY_PATTERNS, NOTIFY_VIA_WAITERS, Notifier, may_read
from shared import events

ACTOR = events.Actor(kind="user", id="usr_1")


def _quarantined(tenant_id: str, device_id: str = "dev_1") -> events.Event:
    return events.DeviceQuarantined(tenant_id=tenant_id, actor=ACTOR, correlation_id="c", device_id=device_id,
                                    reason="facts")


def _cleared(tenant_id: str) -> events.Event:
    return events.DeviceQuarantineCleared(tenant_id=tenant_id, actor=ACTOR, correlation_id="c", device_id="dev_1",
                                         reason="checked")


def _queued(subscriber) -> list[events.Event]:
    out = []
    while not subscriber.queue.empty():
        out.append(subscriber.queue.get_nowait())
    return out


async def test_a_stream_gets_only_its_own_tenants_events_of_the_types_it_asked_for():
    notifier = Notifier()
    ours, _, _ = notifier.subscribe("ten_a", ("device.quarantined",))
    everything, _, _ = notifier.subscribe("ten_a", ("*",))
    theirs, _, _ = notifier.subscribe("ten_b", ("*",))
    mine, other, cleared = _quarantined("ten_a"), _quarantined("ten_b"), _cleared("ten_a")
    for event in (mine, other, cleared):
        await notifier.on_event(event)
    assert _queued(ours) == [mine]
    assert _queued(everything) == [mine, cleared]
    assert _queued(theirs) == [other]


async def test_a_reconnecting_stream_gets_what_came_after_its_last_event():
    notifier = Notifier()
    seen = [_quarantined("ten_a", f"dev_{i}") for i in range(3)]
    for event in seen:
        await notifier.on_event(event)
    _, replay, complete = notifier.subscribe("ten_a", ("*",), last_event_id=seen[0].event_id)
    assert (replay, complete) == (seen[1:], True)
    _, replay, complete = notifier.subscribe("ten_a", ("*",), last_event_id="evt_forgotten")
    assert (replay, complete) == (seen, False)  # some may have been missed: everything kept, and a gap
    _, replay, _ = notifier.subscribe("ten_b", ("*",), last_event_id=seen[0].event_id)
    assert replay == []


async def test_the_replay_buffer_is_bounded_per_tenant_and_in_tenants():
    notifier = Notifier(per_tenant=2, tenants=2)
    first = [_quarantined("ten_a", f"dev_{i}") for i in range(3)]
    for event in first:
        await notifier.on_event(event)
    await notifier.on_event(_quarantined("ten_b"))
    await notifier.on_event(_quarantined("ten_c"))  # ten_a is the least recently active: forgotten
    _, replay, complete = notifier.subscribe("ten_a", ("*",), last_event_id="evt_x")
    assert (replay, complete) == ([], False)
    _, replay, _ = notifier.subscribe("ten_c", ("*",), last_event_id="evt_x")
    assert len(replay) == 1


async def test_a_reader_too_slow_is_cut_off_and_told():
    notifier = Notifier()
    slow, _, _ = notifier.subscribe("ten_a", ("*",))
    for i in range(slow.queue.maxsize + 1):
        await notifier.on_event(_quarantined("ten_a", f"dev_{i}"))
    assert slow.overflowed and slow.queue.full()
    await notifier.on_event(_quarantined("ten_a"))  # no longer subscribed: nothing more is queued
    assert slow.queue.qsize() == slow.queue.maxsize


def test_key_outcomes_come_only_through_the_waiters_queue():
    # Decisions and releases already reach every gateway for its waiting requests: no second binding
    # (raw requests are not outcomes: they come only through the notify queue, bound on demand).
    assert not any(p in ("key.*", "key.#", "*", "#") or p in NOTIFY_VIA_WAITERS for p in NOTIFY_PATTERNS)
    assert [p for p in NOTIFY_PATTERNS if p.startswith("key")] == [] and NOTIFY_ON_DEMAND == ("key.requested",)


async def test_a_release_is_watched_without_its_sealed_key():
    notifier = Notifier()
    watching, _, _ = notifier.subscribe("ten_a", ("key.*",))
    released = events.KeyReleased(tenant_id="ten_a", actor=ACTOR, correlation_id="c", request_id="req_1",
                                  device_id="dev_1", key_id="key_1", key_version=2, algorithm="AES-256",
                                  sealed_key="c2VhbGVkLWZvci10aGUtYWdlbnQ=")
    await notifier.on_event(released)
    (seen,) = _queued(watching)
    assert (seen.type, seen.request_id, seen.key_version, seen.sealed_key) == ("key.released", "req_1", 2, "")
    _, replay, _ = notifier.subscribe("ten_a", ("key.*",), last_event_id="evt_unknown")
    assert [e.sealed_key for e in replay] == [""]  # nor is it kept for replay
    assert may_read(Principal("user", "usr_1", "ten_a", frozenset({"approver"})), "key.released")
    assert not may_read(Principal("user", "usr_1", "ten_a", frozenset({"key_custodian"})), "key.released")
