"""Posture without I/O: quarantine on drifted facts or silent heartbeats, and clearing."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.policysvc import handlers_posture, posture
from services.policysvc.scheduler import sweep
from shared import commands_policy as c
from shared import events, rpc

from .policysvc_world import EU_FACTS, TENANT, US_FACTS, World, now, policy


def test_the_heartbeat_verdict():
    assert posture.heartbeat_verdict("active", {"k": ("r",)}) == "quarantine"
    assert posture.heartbeat_verdict("quarantined", {"k": ("r",)}) is None
    assert posture.heartbeat_verdict("quarantined", {}) == "clear"
    assert posture.heartbeat_verdict("active", {}) is None
    assert posture.failure_reasons({"k1": ("a", "b"), "k2": ("c",)}) == ("k1: a", "k1: b", "k2: c")


def test_quarantine_events_name_the_cause():
    reason, (failed, quarantined) = posture.quarantine_events(
        TENANT, "dev_1", cause="heartbeat_missed", key_ids=("k",), reasons=("silent",), correlation_id="c",
        source_ip=None)
    assert reason == "heartbeats stopped" and quarantined.reason == reason
    assert quarantined.causation_id == failed.event_id and failed.cause == "heartbeat_missed"


async def _released(world: World) -> None:
    await world.put_policy(policy())
    await world.enroll("dev_1")
    assert (await world.ask("dev_1")).effect == "allow"


async def test_drifted_facts_quarantine_and_passing_facts_clear():
    world = World()
    await _released(world)
    beat = await world.heartbeat("dev_1", US_FACTS)
    assert (beat.status, beat.next_heartbeat_within_seconds, beat.heartbeat_interval_seconds) == ("quarantined", 900, 450)
    failed, = world.published(events.DevicePostureFailed)
    assert failed.key_ids == ("key_1",) and failed.cause == "facts"
    assert (await world.ask("dev_1")).effect == "deny"  # quarantined means deny
    assert (await world.heartbeat("dev_1", US_FACTS)).status == "quarantined"
    assert len(world.published(events.DeviceQuarantined)) == 1
    assert (await world.heartbeat("dev_1", EU_FACTS)).status == "active"
    assert world.published(events.DeviceQuarantineCleared)[0].reason == "fresh facts satisfy the policy again"
    assert (await world.ask("dev_1")).effect == "allow"


async def test_a_policy_tightened_since_does_not_quarantine_keys_it_did_not_release():
    world = World()
    await _released(world)
    head, = await world.store.active_policies(TENANT)
    await world.put_policy({**policy(), "rules": [{"id": "never", "effect": "deny",
                                                   "when": {"fact": "identity.region", "op": "exists"}}]},
                           policy_id=head["policy_id"])
    assert (await world.heartbeat("dev_1", EU_FACTS)).status == "active"


async def test_silent_devices_are_quarantined_by_the_sweep_and_operators_clear_them():
    world = World()
    await _released(world)
    await world.heartbeat("dev_1", EU_FACTS)
    row, = world.store.devices
    assert await sweep(now(), store=world.store, targets=world.targets) == row["heartbeat_due"]
    row["heartbeat_due"] -= timedelta(seconds=901)
    await sweep(now(), store=world.store, targets=world.targets)
    assert row["status"] == "quarantined" and row["quarantine_cause"] == "heartbeat_missed"
    request = world.as_("admin")
    cleared = await handlers_posture.clear_quarantine(request, c.ClearQuarantine(device_id="dev_1"), store=world.store,
                                                      targets=world.targets)
    assert cleared.status == "active" and row["heartbeat_due"] > now()
    assert world.published(events.DeviceQuarantineCleared)[0].reason == "cleared by an operator"
    with pytest.raises(rpc.NotFound):
        await handlers_posture.clear_quarantine(request, c.ClearQuarantine(device_id="dev_1"), store=world.store,
                                                targets=world.targets)
    shown = await handlers_posture.get_posture(request, c.DeviceRef(device_id="dev_1"), store=world.store)
    assert shown.status == "active" and shown.released_keys == ["key_1"]


async def test_the_posture_shows_the_last_facts_each_with_its_provenance():
    world = World()
    await _released(world)
    shown = await handlers_posture.get_posture(world.as_("admin"), c.DeviceRef(device_id="dev_1"), store=world.store)
    assert shown.last_facts is None and shown.last_facts_provenance is None
    facts = {**EU_FACTS, "integrity": {"firewall": {"ruleset_sha256": "ab" * 32, "chains": ["inet filter input"]}},
             "observed": {"source_ip": "192.0.2.7"}}
    await world.heartbeat("dev_1", facts, provenance={"identity.region": "cloud", "observed": "observed"})
    shown = await handlers_posture.get_posture(world.as_("admin"), c.DeviceRef(device_id="dev_1"), store=world.store)
    assert shown.last_facts == facts
    labels = shown.last_facts_provenance
    assert labels["identity.region"] == "cloud" and labels["observed.source_ip"] == "observed"
    assert labels["integrity.firewall.ruleset_sha256"] == "claimed" and labels["integrity.firewall.chains"] == "claimed"


def test_agents_beat_twice_per_grace_period():
    assert [posture.heartbeat_interval(g) for g in (1, 2, 3, 900)] == [1, 1, 1, 450]


async def test_a_revoked_or_unknown_device_has_no_heartbeat():
    world = World()
    with pytest.raises(rpc.NotFound):
        await world.heartbeat("dev_x", EU_FACTS)
