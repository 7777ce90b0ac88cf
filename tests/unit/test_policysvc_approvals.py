"""Approvals without I/O: the pure vote rules, and votes, quorum and expiry through the handlers."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.policysvc import approvals as voting
from services.policysvc.scheduler import sweep
from shared import events, rpc

from .policysvc_world import TENANT, World, eu_rule, now, policy


def pending(**fields):
    doc = {"approval_id": "apr_1", "request_id": "req_1", "device_id": "dev_1", "key_id": "key_1",
           "status": "pending", "approvals_required": 2, "remember_for_seconds": 0, "votes": [],
           "expires_at": now() + timedelta(hours=1), "requested_by": "dev_1", "ephemeral_public_key": "k"}
    return {**doc, **fields}


def test_votes_count_once_per_person_and_never_from_the_requester():
    approval = pending(votes=[{"by": "alice", "at": now(), "comment": ""}])
    with pytest.raises(voting.VoteRefused, match="different people"):
        voting.check_vote(approval, "alice", now=now())
    with pytest.raises(voting.VoteRefused) as refused:
        voting.check_vote(approval, "dev_1", now=now())
    assert refused.value.status == 403
    voting.check_vote(approval, "bob", now=now())


def test_an_expired_or_settled_approval_takes_no_votes():
    with pytest.raises(voting.VoteRefused, match="expired"):
        voting.check_vote(pending(expires_at=now() - timedelta(seconds=1)), "bob", now=now())
    with pytest.raises(voting.VoteRefused, match="already approved"):
        voting.check_vote(pending(status="approved"), "bob", now=now())
    assert voting.is_overdue(pending(expires_at=now()), now() + timedelta(seconds=1))
    assert not voting.is_overdue(pending(status="denied", expires_at=now()), now() + timedelta(seconds=1))


def test_m_of_n_counts_distinct_people():
    ballot = {"at": now(), "comment": ""}
    assert not voting.is_satisfied(pending(votes=[{"by": "a", **ballot}, {"by": "a", **ballot}]))
    assert voting.is_satisfied(pending(votes=[{"by": "a", **ballot}, {"by": "b", **ballot}]))


def test_the_tenant_expiry_only_tightens_the_rule():
    assert voting.expiry_seconds(3600, voting.PolicySettings(approval_expiry_seconds=600)) == 600
    assert voting.expiry_seconds(300, voting.PolicySettings(approval_expiry_seconds=600)) == 300


async def _asked(world: World, **approval):
    await world.put_policy(policy("needs-approval", eu_rule("require_approval", **approval)))
    await world.enroll("dev_1")
    outcome = await world.ask("dev_1")
    assert outcome.effect == "require_approval"
    return outcome.disclosed["approval_id"]


async def test_two_of_three_release_the_key_once_both_approved():
    world = World()
    approval_id = await _asked(world, approvals_required=2)
    assert world.wakes == 1 and len(world.published(events.ApprovalRequested)) == 1
    first = await world.vote("alice", approval_id)
    assert (first.status, first.approvals_received) == ("pending", 1)
    assert [e.approvals_received for e in world.published(events.ApprovalVoted)] == [1]
    with pytest.raises(rpc.ProblemError, match="different people"):
        await world.vote("alice", approval_id)
    second = await world.vote("bob", approval_id, comment="ok")
    assert (second.status, second.approvals_received, second.comment) == ("approved", 2, "ok")
    granted, = world.published(events.ApprovalGranted)
    assert granted.approvers == ("alice", "bob")
    final = world.published(events.KeyDecided)[-1]
    assert (final.effect, final.reasons[-1]) == ("allow", "approved by alice, bob")
    assert (await world.store.device(TENANT, "dev_1"))["released_keys"] == ["key_1"]
    assert world.store.staged == []


async def test_the_requester_cannot_approve_but_anyone_else_may_deny():
    world = World()
    approval_id = await _asked(world)
    with pytest.raises(rpc.ProblemError) as refused:
        await world.vote("dev_1", approval_id)
    assert refused.value.problem.status == 403
    denied = await world.vote("carol", approval_id, verdict="deny", comment="not today")
    assert (denied.status, denied.comment) == ("denied", "not today")
    final = world.published(events.KeyDecided)[-1]
    assert final.effect == "deny" and final.disclosed["reasons"] == ["approval denied by carol: not today"]
    with pytest.raises(rpc.ProblemError, match="already denied"):
        await world.vote("dave", approval_id)


async def test_an_overdue_approval_expires_on_the_next_vote_or_sweep():
    world = World()
    approval_id = await _asked(world)
    world.age_approvals(7200)
    with pytest.raises(rpc.ProblemError, match="already expired"):
        await world.vote("alice", approval_id)
    assert len(world.published(events.ApprovalExpired)) == 1

    other = World()
    approval_id = await _asked(other)
    other.age_approvals(7200)
    assert await sweep(now(), store=other.store, targets=other.targets) is None
    assert (await other.store.approval(TENANT, approval_id))["status"] == "expired"
    assert other.published(events.KeyDecided)[-1].reasons[-1] == "approval expired before enough approvals"


async def test_an_approval_remembered_allows_the_next_request_without_one():
    world = World()
    approval_id = await _asked(world, remember_for_seconds=3600)
    await world.vote("alice", approval_id)
    assert world.published(events.ApprovalGranted)[0].remember_until is not None
    world.targets.drop_remembered(TENANT)  # what the approval.granted event does on every instance
    again = await world.ask("dev_1")
    assert again.effect == "allow" and again.reasons[-1].startswith("approved earlier and remembered")
    assert (await world.ask("dev_1", key_id="key_2")).effect == "require_approval"  # remembered per key
