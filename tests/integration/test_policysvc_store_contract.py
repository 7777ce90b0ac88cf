"""One contract for policysvc's store, run against MongoDB and against the in-memory twin."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.policysvc import decision
from services.policysvc.store import PolicyStore
from services.policysvc.store_memory import MemoryPolicyStore
from shared import events
from shared.store import DuplicateKeyError, service_database

T, OTHER = "ten_a", "ten_b"
NOW = datetime.now(UTC).replace(microsecond=0)


def _event(tenant_id: str = T) -> events.Event:
    return events.PolicyDeleted(tenant_id=tenant_id, policy_id="pol_x")


@pytest.fixture(params=["mongo", "memory"])
async def store(request, mongo_client, db_prefix):
    sent: list[events.Event] = []

    async def publish(event: events.Event) -> None:
        sent.append(event)

    if request.param == "memory":
        made = MemoryPolicyStore(publish=publish)
    else:
        made = PolicyStore(service_database(mongo_client, "policysvc", prefix=db_prefix), publish=publish)
    await made.create_indexes()
    made.sent = sent
    return made


def _head(policy_id: str, version: int, name: str = "p") -> dict:
    return {"policy_id": policy_id, "version": version, "name": name, "document": {"name": name}, "updated_at": NOW,
            "updated_by": "u", "deleted": False}


async def test_policy_versions_move_the_head_by_compare_and_swap(store):
    created = _event()
    assert await store.put_version(T, _head("pol_1", 1), 0, created)
    await store.publish_staged("policies", T, created)
    assert store.sent == [created]
    assert await store.put_version(T, _head("pol_1", 2), 1, _event())
    assert not await store.put_version(T, _head("pol_1", 2), 1, _event())  # that version exists
    with pytest.raises(DuplicateKeyError):
        await store.put_version(T, _head("pol_2", 1), 0, _event())  # the name is taken
    assert [h["version"] for h in await store.active_policies(T)] == [2]
    assert [v["version"] for v in await store.policy_versions(T, "pol_1")] == [2, 1]
    await store.mark_restored(T, "pol_1", 2, restored_from=1)
    assert (await store.policy_version(T, "pol_1", 2))["restored_from"] == 1
    assert await store.current_version(T, "pol_1") == 2
    assert await store.delete_policy(T, "pol_1", now=NOW, event=_event())
    assert not await store.delete_policy(T, "pol_1", now=NOW, event=_event())
    assert await store.current_version(T, "pol_1") is None and await store.head(T, "pol_1") is None
    assert await store.active_policies(OTHER) == [] and await store.policy_versions(OTHER, "pol_1") == []


async def test_groups_by_name_and_kind(store):
    doc = {"group_id": "grp_1", "name": "eu", "version": 1, "document": {"kind": "device"}, "updated_at": NOW,
           "deleted": False}
    await store.insert_group(T, doc, _event())
    with pytest.raises(DuplicateKeyError):
        await store.insert_group(T, {**doc, "group_id": "grp_2"}, _event())
    assert not await store.replace_group(T, "grp_1", expected_version=2, doc={**doc, "version": 3}, event=_event())
    assert await store.replace_group(T, "grp_1", expected_version=1, doc={**doc, "version": 2}, event=_event())
    assert [g["version"] for g in await store.live_groups(T, kind="device")] == [2]
    assert await store.live_groups(T, kind="key") == []
    assert await store.delete_group(T, "grp_1", freed_name="eu#deleted", now=NOW, event=_event())
    assert await store.live_group(T, "grp_1") is None and await store.live_groups(T) == []


async def test_settings_per_tenant(store):
    assert await store.tenant_settings(T) is None
    await store.put_settings(T, {"heartbeat_grace_seconds": 5}, by="u", event=_event())
    await store.put_settings(T, {"heartbeat_grace_seconds": 6}, by="u", event=_event())
    assert await store.tenant_settings(T) == {"heartbeat_grace_seconds": 6}
    assert await store.tenant_settings(OTHER) is None


async def test_a_decision_is_recorded_once_and_read_back_by_its_device(store):
    doc = {"request_id": "req_1", "device_id": "dev_1", "key_id": "k", "facts": {"a": 1}, "effect": "allow",
           "decided_at": NOW, "outcome": "{}", "trace_record": None, "provenance": {"identity.region": "cloud"}}
    assert await store.record_decision(T, doc)
    assert not await store.record_decision(T, {**doc, "effect": "deny"})
    assert (await store.find_decision(T, "req_1"))["effect"] == "allow"
    assert await store.device_decision(T, "req_1", "dev_2") is None
    assert (await store.device_decision(T, "req_1", "dev_1"))["effect"] == "allow"
    assert await store.device_decision(OTHER, "req_1", "dev_1") is None
    listed = await store.list_decisions(T, match={"device_id": "dev_1"}, limit=10)
    assert [d["request_id"] for d in listed] == ["req_1"] and "facts" not in listed[0]
    since = await store.decisions_since(T, NOW - timedelta(days=1), limit=10)
    assert since[0]["facts"] == {"a": 1}
    assert since[0]["provenance"] == {"identity.region": "cloud"}  # a replay weighs facts as they were
    assert [d["effect"] for d in await store.releasing_decisions(T, "dev_1", "k", limit=20)] == ["allow"]
    assert await store.find_decision(OTHER, "req_1") is None
    assert await store.record_decision(OTHER, {**doc, "effect": "deny"})  # another tenant's request of that id
    assert (await store.find_decision(OTHER, "req_1"))["effect"] == "deny"
    assert (await store.find_decision(T, "req_1"))["effect"] == "allow"


async def test_a_store_from_before_decisions_were_keyed_by_id_still_decides_each_request_once(mongo_client, db_prefix):
    # The old layout: generated `_id`s, found through a unique (tenant_id, request_id) index that stays.
    db = service_database(mongo_client, "policysvc", prefix=db_prefix)
    await db["decisions"].create_index([("tenant_id", 1), ("request_id", 1)], unique=True)
    doc = {"request_id": "req_old", "device_id": "dev_1", "key_id": "k", "facts": {}, "effect": "allow",
           "decided_at": NOW, "outcome": "{}", "trace_record": None, "provenance": None}
    await db["decisions"].insert_one({**doc, "tenant_id": T})

    async def publish(event: events.Event) -> None:
        pass

    store = PolicyStore(db, publish=publish)
    await store.create_indexes()
    assert not await store.record_decision(T, {**doc, "effect": "deny"})  # a redelivery of an older request
    assert (await store.device_decision(T, "req_old", "dev_1"))["effect"] == "allow"
    assert await store.record_decision(T, {**doc, "request_id": "req_new"})
    assert not await store.record_decision(T, {**doc, "request_id": "req_new", "effect": "deny"})
    assert (await store.find_decision(T, "req_new"))["effect"] == "allow"


async def test_votes_compare_and_swap_and_settle_once(store):
    approval = {"approval_id": "apr_1", "request_id": "req_1", "device_id": "dev_1", "key_id": "k", "status": "pending",
                "votes": [], "expires_at": NOW - timedelta(seconds=1), "requested_at": NOW, "approvals_required": 2}
    assert await store.open_approval(T, approval, _event())
    assert not await store.open_approval(T, approval, _event())
    ballot = {"by": "alice", "at": NOW, "comment": ""}
    assert await store.add_vote(T, "apr_1", seen=[], ballot=ballot, event=None)
    assert not await store.add_vote(T, "apr_1", seen=[], ballot={**ballot, "by": "bob"}, event=None)
    assert [a["approval_id"] for a in await store.overdue_approvals(NOW)] == ["apr_1"]
    assert await store.next_deadline() == approval["expires_at"]
    assert await store.settle_approval(T, "apr_1", status="expired", now=NOW, comment=None, events=(_event(),))
    assert not await store.settle_approval(T, "apr_1", status="approved", now=NOW, comment="x", events=(_event(),))
    settled = await store.approval_for_request(T, "req_1")
    assert (settled["status"], len(settled["votes"]), settled.get("comment")) == ("expired", 1, None)
    assert [a["status"] for a in await store.list_approvals(T, status="expired", limit=5)] == ["expired"]
    await store.remember_grant(T, "dev_1", "k", until=NOW, approval_id="apr_1")
    await store.remember_grant(T, "dev_1", "k", until=NOW + timedelta(hours=1), approval_id="apr_1")
    assert await store.remembered_grants(T) == {("dev_1", "k"): NOW + timedelta(hours=1)}


async def test_devices_quarantine_once_and_clear(store):
    await store.project_enrolled(T, "dev_1", name="vm", groups=["eu"], at=NOW)
    await store.note_release(T, "dev_1", "k", decided_at=NOW, policies=[["pol_1", 2]])
    await store.note_release(T, "dev_1", "k", decided_at=NOW - timedelta(seconds=1), policies=[["pol_1", 1]])
    await store.record_heartbeat(T, "dev_1", at=NOW, due=NOW, facts={"integrity": {"file_hashes": {"/etc/a.conf": "ab"}}},
                                 provenance={"identity.region": "cloud"})
    device = await store.device(T, "dev_1")
    assert device["last_facts"] == {"integrity": {"file_hashes": {"/etc/a.conf": "ab"}}}
    assert device["last_provenance"] == [["identity.region", "cloud"]]
    assert (device["status"], device["released_keys"], device["groups"]) == ("active", ["k"], ["eu"])
    assert decision.releaser(device, "k") == {"decided_at": NOW, "policies": [["pol_1", 2]]}  # the newer stands
    assert [d["device_id"] for d in await store.silent_devices(NOW)] == ["dev_1"]
    assert not await store.quarantine_device(T, "dev_1", reason="r", cause="heartbeat_missed", now=NOW,
                                             events=(_event(),), heartbeat_due=NOW - timedelta(seconds=1))
    assert await store.quarantine_device(T, "dev_1", reason="r", cause="facts", now=NOW, events=(_event(),))
    assert not await store.quarantine_device(T, "dev_1", reason="r", cause="facts", now=NOW, events=(_event(),))
    assert await store.silent_devices(NOW) == []
    assert await store.clear_quarantine(T, "dev_1", heartbeat_due=NOW + timedelta(hours=1), event=_event())
    assert not await store.clear_quarantine(T, "dev_1", heartbeat_due=NOW, event=_event())
    await store.project_revoked(T, "dev_1", at=NOW)
    assert (await store.device(T, "dev_1"))["status"] == "revoked" and await store.device(OTHER, "dev_1") is None


async def test_devices_counted_by_posture_and_quarantine_cause(store):
    for n in range(4):
        await store.project_enrolled(T, f"dev_{n}", name="vm", groups=[], at=NOW)
    await store.project_enrolled(OTHER, "dev_x", name="vm", groups=[], at=NOW)
    assert await store.quarantine_device(T, "dev_0", reason="r", cause="facts", now=NOW, events=(_event(),))
    assert await store.quarantine_device(T, "dev_1", reason="r", cause="heartbeat_missed", now=NOW, events=(_event(),))
    await store.project_revoked(T, "dev_2", at=NOW)
    assert await store.posture_counts(T) == {
        "active": 1, "revoked": 1, "quarantined_facts": 1, "quarantined_heartbeat_missed": 1}
    assert await store.posture_counts(OTHER) == {
        "active": 1, "revoked": 0, "quarantined_facts": 0, "quarantined_heartbeat_missed": 0}
