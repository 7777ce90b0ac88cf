"""A heartbeat re-checks each released key against the policy versions that released it, read from
the device document: its store commands do not grow with the device's decision history."""

from __future__ import annotations

from typing import Any

import pytest
from pymongo import AsyncMongoClient, monitoring

from services.policysvc.store import PolicyStore
from shared import events
from shared.store import service_database
from tests.unit.policysvc_world import EU_FACTS, TENANT, US_FACTS, World, eu_rule, policy

US_APPROVAL = {"id": "us-approval", "effect": "require_approval",
               "when": {"fact": "identity.region", "op": "equals", "value": "us-east-1"}}
US_ALLOW = {**US_APPROVAL, "id": "us-allow", "effect": "allow"}


class Commands(monitoring.CommandListener):
    """Every command the client sends: (name, collection)."""

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def started(self, event: monitoring.CommandStartedEvent) -> None:
        self.sent.append((event.command_name, event.command.get(event.command_name)))

    def succeeded(self, event: monitoring.CommandSucceededEvent) -> None:
        pass

    def failed(self, event: monitoring.CommandFailedEvent) -> None:
        pass


@pytest.fixture
async def store_and_commands(mongo_url, db_prefix):
    commands = Commands()
    client = AsyncMongoClient(mongo_url, tz_aware=True, event_listeners=[commands])
    sent: list[events.Event] = []

    async def publish(event: events.Event) -> None:
        sent.append(event)

    store = PolicyStore(service_database(client, "policysvc", prefix=db_prefix), publish=publish)
    await store.create_indexes()
    store.published = sent
    yield store, commands
    await client.close()


@pytest.fixture(params=["mongo", "memory"])
async def world(request, store_and_commands):
    return World(store_and_commands[0] if request.param == "mongo" else None)


async def _heartbeat_commands(world: World, commands: Commands) -> list[tuple[str, Any]]:
    commands.sent.clear()
    assert (await world.heartbeat("dev_1", EU_FACTS)).status == "active"
    return list(commands.sent)


async def test_a_long_history_adds_no_store_command_to_a_heartbeat(store_and_commands):
    store, commands = store_and_commands
    world = World(store)
    await world.put_policy(policy("eu", eu_rule(), US_APPROVAL))
    await world.enroll("dev_1")
    for key_id in ("key_1", "key_2"):
        assert (await world.ask("dev_1", key_id)).effect == "allow"
    await world.heartbeat("dev_1", EU_FACTS)  # settings, groups and policy versions cached
    short = await _heartbeat_commands(world, commands)
    # Newer than the releases: allowed again, and asked from elsewhere, waiting for approval.
    for _ in range(3):
        assert (await world.ask("dev_1", "key_1")).effect == "allow"
    for key_id in ("key_1", "key_2") * 12:
        assert (await world.ask("dev_1", key_id, facts=US_FACTS)).effect == "require_approval"
    long = await _heartbeat_commands(world, commands)
    assert long == short
    assert not [c for c in long if c[1] in ("decisions", "approvals", "policy_versions")]
    assert len(long) <= 2  # the device read and the heartbeat's write


async def test_an_approval_granted_late_leaves_a_newer_release_standing(world):
    # v1 needs approval for the EU; v2 allows the EU and the US. Released under v2, then v1's approval granted.
    head = await world.put_policy(policy("p", eu_rule("require_approval")))
    await world.enroll("dev_1")
    approval_id = (await world.ask("dev_1")).disclosed["approval_id"]
    await world.put_policy(policy("p", eu_rule(), US_ALLOW), policy_id=head.policy_id)
    assert (await world.ask("dev_1")).effect == "allow"
    assert (await world.vote("alice", approval_id)).status == "approved"
    assert (await world.heartbeat("dev_1", US_FACTS)).status == "active"  # v2 governs: the US passes


async def test_an_approved_release_is_checked_against_the_versions_it_was_approved_under(world):
    # v1 allows the EU only; v2 needs approval for the EU and allows the US.
    head = await world.put_policy(policy("p", eu_rule()))
    await world.enroll("dev_1")
    assert (await world.ask("dev_1")).effect == "allow"
    await world.put_policy(policy("p", eu_rule("require_approval"), US_ALLOW), policy_id=head.policy_id)
    approval_id = (await world.ask("dev_1")).disclosed["approval_id"]
    assert (await world.heartbeat("dev_1", US_FACTS)).status == "quarantined"  # pending: v1 still governs
    assert (await world.heartbeat("dev_1", EU_FACTS)).status == "active"
    assert (await world.vote("alice", approval_id)).status == "approved"
    assert (await world.heartbeat("dev_1", US_FACTS)).status == "active"  # approved: v2 governs


async def test_a_key_released_before_devices_kept_releasers_is_found_in_its_history_once(store_and_commands):
    store, commands = store_and_commands
    world = World(store)
    head = await world.put_policy(policy("p", eu_rule()))
    await world.enroll("dev_1")
    assert (await world.ask("dev_1")).effect == "allow"
    await world.put_policy(policy("p", eu_rule("deny")), policy_id=head.policy_id)
    await store.devices.raw.update_one({"tenant_id": TENANT, "device_id": "dev_1"}, {"$unset": {"releasers": ""}})
    commands.sent.clear()
    assert (await world.heartbeat("dev_1", EU_FACTS)).status == "active"  # v1 released it: v2's deny does not apply
    assert ("find", "decisions") in commands.sent
    assert not [c for c in await _heartbeat_commands(world, commands) if c[1] == "decisions"]



async def test_an_approval_granted_after_a_release_under_unchanged_versions_leaves_that_release_standing(world):
    # v1 allows the EU only; v2 needs approval for the EU and allows the US. A replica not yet told
    # of v2 releases the key again under v1 after v2's approval was asked: the device's releaser
    # is unchanged, so not rewritten, and the approval granted later must not displace it.
    lagging = World(world.store)
    head = await world.put_policy(policy("p", eu_rule()))
    await world.enroll("dev_1")
    assert (await world.ask("dev_1")).effect == "allow"
    assert (await lagging.ask("dev_1", request_id="req_lagging_1")).effect == "allow"
    await world.put_policy(policy("p", eu_rule("require_approval"), US_ALLOW), policy_id=head.policy_id)
    approval_id = (await world.ask("dev_1")).disclosed["approval_id"]
    assert (await lagging.ask("dev_1", request_id="req_lagging_2")).effect == "allow"
    assert (await world.vote("alice", approval_id)).status == "approved"
    assert (await world.heartbeat("dev_1", US_FACTS)).status == "quarantined"  # v1, the newest release's, governs


async def test_a_release_writes_the_device_only_when_its_policy_versions_change(store_and_commands):
    store, commands = store_and_commands
    world = World(store)
    head = await world.put_policy(policy("p", eu_rule()))
    await world.enroll("dev_1")
    assert (await world.ask("dev_1")).effect == "allow"
    commands.sent.clear()
    assert (await world.ask("dev_1")).effect == "allow"
    assert ("update", "devices") not in commands.sent
    await world.put_policy(policy("p", eu_rule(), US_ALLOW), policy_id=head.policy_id)
    commands.sent.clear()
    assert (await world.ask("dev_1")).effect == "allow"
    assert ("update", "devices") in commands.sent
    assert (await world.heartbeat("dev_1", US_FACTS)).status == "active"  # v2 released it last
