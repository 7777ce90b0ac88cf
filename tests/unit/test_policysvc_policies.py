"""Policies, versions and groups without I/O, through the handlers and the in-memory store."""

from __future__ import annotations

import pytest

from services.policysvc import handlers_policies as handlers
from shared import commands_policy as c
from shared import events, rpc

from .policysvc_world import TENANT, World, eu_rule, policy


async def test_every_put_is_a_version_and_restore_makes_a_new_one():
    world = World()
    first = await world.put_policy(policy("p"))
    second = await world.put_policy(policy("p", eu_rule("deny")), policy_id=first.policy_id)
    assert (first.version, second.version) == (1, 2)
    request, ref = world.as_("admin"), c.PolicyRef(policy_id=first.policy_id)
    listed = await handlers.list_policy_versions(request, ref, store=world.store)
    assert [(v.version, v.current) for v in listed.items] == [(2, True), (1, False)]
    restored = await handlers.restore_policy_version(
        request, c.PolicyVersionRef(policy_id=first.policy_id, version=1), store=world.store, cache=world.cache)
    assert (restored.version, restored.restored_from, restored.document) == (3, 1, first.document)
    again = await handlers.get_policy_version(request, c.PolicyVersionRef(policy_id=first.policy_id, version=3),
                                              store=world.store)
    assert again.restored_from == 1
    assert "current" not in again.model_dump() and again.model_dump()["restored_from"] == 1
    assert [e.policy_version for e in world.published(events.PolicyUpdated)] == [1, 2, 3]
    assert world.store.staged == []


async def test_names_are_unique_and_deleted_policies_are_gone():
    world = World()
    first = await world.put_policy(policy("p"))
    with pytest.raises(rpc.ProblemError, match="exists"):
        await world.put_policy(policy("p"))
    request = world.as_("admin")
    deleted = await handlers.delete_policy(request, c.PolicyRef(policy_id=first.policy_id), store=world.store,
                                           cache=world.cache)
    assert deleted.deleted and (await handlers.list_policies(request, c.NoParams(), store=world.store)).items == []
    with pytest.raises(rpc.NotFound):
        await handlers.get_policy(request, c.PolicyRef(policy_id=first.policy_id), store=world.store)
    versions = await handlers.list_policy_versions(request, c.PolicyRef(policy_id=first.policy_id), store=world.store)
    assert [v.current for v in versions.items] == [False]


async def test_groups_keep_their_kind_and_free_their_name_when_deleted():
    world = World()
    admin = world.as_  # one request per call, as the gateway sends them (an id derives from it)
    group = {"name": "eu", "kind": "device", "members": ["dev_1"]}
    made = await handlers.put_group(admin("admin"), c.PutGroupParams(group=group), store=world.store, targets=world.targets)
    assert made.model_dump()["members"] == ["dev_1"] and made.version == 1
    with pytest.raises(rpc.ProblemError, match="kind cannot change"):
        await handlers.put_group(admin("admin"), c.PutGroupParams(group_id=made.group_id, group={**group, "kind": "key"}),
                                 store=world.store, targets=world.targets)
    with pytest.raises(rpc.ProblemError, match="exists"):
        await handlers.put_group(admin("admin"), c.PutGroupParams(group=group), store=world.store, targets=world.targets)
    await handlers.delete_group(admin("admin"), c.GroupRef(group_id=made.group_id), store=world.store, targets=world.targets)
    await handlers.put_group(admin("admin"), c.PutGroupParams(group=group), store=world.store, targets=world.targets)
    listed = await handlers.list_groups(admin("admin"), c.ListGroups(kind="device"), store=world.store)
    assert [g.model_dump()["name"] for g in listed.items] == ["eu"]


async def test_settings_round_trip_and_refresh_the_cache():
    world = World()
    request = world.as_("admin")
    assert (await handlers.get_settings(request, c.NoParams(), targets=world.targets)).heartbeat_grace_seconds == 900
    await handlers.put_settings(request, c.PolicySettings(heartbeat_grace_seconds=60), store=world.store,
                                targets=world.targets)
    assert (await handlers.get_settings(request, c.NoParams(), targets=world.targets)).heartbeat_grace_seconds == 60
    assert await world.store.tenant_settings(TENANT) == {"approval_expiry_seconds": 3600, "heartbeat_grace_seconds": 60}
