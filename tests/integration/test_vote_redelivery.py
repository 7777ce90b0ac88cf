"""A vote redelivered after its replica died between its writes and the record of its reply.

The broker hands the vote to another replica, which finds no recorded reply and runs it again. Each
test runs a first delivery up to a crash window (the store "dies" right after a given write), then
delivers the same request again: the redelivery finishes what the first started and answers 200 with
the approval, which is settled once, its grant's steps done and its events sent once. On MongoDB
and on the in-memory twin.
"""

from __future__ import annotations

from typing import Any

import pytest

from services.policysvc import handlers_approvals
from services.policysvc.approvals import SETTLED_BY
from services.policysvc.store import PolicyStore
from shared import commands_policy as c
from shared import events, rpc
from shared.events import Actor
from shared.store import service_database
from tests.unit.policysvc_world import TENANT, World, eu_rule, policy


class Killed(Exception):
    """The replica was SIGKILLed: nothing after this point of the first delivery ran."""


class Dies:
    """The store as a dying replica sees it: `write` happens, then the replica is gone. With
    `partly`, only the first of the events given to `publish_staged` is sent before it dies."""

    def __init__(self, store: Any, write: str, *, partly: bool = False) -> None:
        self._store, self._write, self._partly = store, write, partly

    def __getattr__(self, name: str) -> Any:
        real = getattr(self._store, name)
        if name != self._write:
            return real

        async def then_die(*args: Any, **kwargs: Any) -> Any:
            if self._partly:
                args = (*args[:2], *args[2:3])
            await real(*args, **kwargs)
            raise Killed(name)

        return then_die


@pytest.fixture(params=["mongo", "memory"])
async def world(request, mongo_client, db_prefix):
    if request.param == "memory":
        return World()
    sent: list[events.Event] = []

    async def publish(event: events.Event) -> None:
        sent.append(event)

    store = PolicyStore(service_database(mongo_client, "policysvc", prefix=db_prefix), publish=publish)
    await store.create_indexes()
    store.published = sent
    return World(store)


async def _opened(world: World, approvals_required: int = 2) -> str:
    await world.put_policy(policy("needs-approval", eu_rule("require_approval", approvals_required=approvals_required,
                                                            remember_for_seconds=3600)))
    await world.enroll("dev_1")
    outcome = await world.ask("dev_1")
    assert outcome.effect == "require_approval"
    return outcome.disclosed["approval_id"]


def _vote(person: str, approval_id: str, verdict: str = "approve") -> tuple[rpc.RpcRequest, c.Vote]:
    params = c.Vote(approval_id=approval_id, verdict=verdict, comment=f"{verdict} by {person}")
    return rpc.RpcRequest(method="vote", tenant_id=TENANT, actor=Actor(kind="user", id=person),
                          params=params.model_dump()), params


async def _deliver(world: World, request: rpc.RpcRequest, params: c.Vote, store: Any = None) -> c.ApprovalView:
    return await handlers_approvals.vote(request, params, store=store or world.store, targets=world.targets)


async def _crashed_then_redelivered(world: World, request, params, write: str, *, partly: bool = False):
    with pytest.raises(Killed):
        await _deliver(world, request, params, Dies(world.store, write, partly=partly))
    answer = await _deliver(world, request, params)
    assert await _deliver(world, request, params) == answer  # and again: nothing more happens
    return answer


async def _staged(world: World) -> int:
    """Events written and not yet sent."""
    if isinstance(world.store, PolicyStore):
        return await world.store.approvals.raw.count_documents({"_outbox.0": {"$exists": True}})
    return len(world.store.staged)


def _final_decisions(world: World) -> list[str]:
    return [e.effect for e in world.published(events.KeyDecided) if e.effect != "require_approval"]


GRANT_WINDOWS = [("add_vote", False), ("settle_approval", False), ("remember_grant", False), ("note_release", False),
                 ("publish_staged", True), ("publish_staged", False)]


@pytest.mark.parametrize(("write", "partly"), GRANT_WINDOWS)
async def test_a_granting_vote_redelivered_after_a_crash_settles_once_and_releases(world, write, partly):
    approval_id = await _opened(world)
    await world.vote("alice", approval_id)
    request, params = _vote("bob", approval_id)
    answer = await _crashed_then_redelivered(world, request, params, write, partly=partly)

    assert (answer.status, answer.approvals_received, answer.comment) == ("approved", 2, "approve by bob")
    stored = await world.store.approval(TENANT, approval_id)
    assert answer == handlers_approvals.approval_view(stored)
    assert stored[SETTLED_BY] == request.request_id
    granted, = world.published(events.ApprovalGranted)
    assert granted.approvers == ("alice", "bob") and granted.remember_until is not None
    assert _final_decisions(world) == ["allow"]
    assert len(world.published(events.ApprovalVoted)) == 1
    assert await _staged(world) == 0
    # The grant's steps all ran: the device holds the key, and the approval is remembered.
    assert (await world.store.device(TENANT, "dev_1"))["released_keys"] == ["key_1"]
    assert list(await world.store.remembered_grants(TENANT)) == [("dev_1", "key_1")]
    # The rules stand for every other request.
    with pytest.raises(rpc.ProblemError, match="already approved"):
        await world.vote("carol", approval_id)


@pytest.mark.parametrize("write", ["add_vote", "publish_staged"])
async def test_a_counted_vote_redelivered_after_a_crash_counts_once(world, write):
    approval_id = await _opened(world)
    request, params = _vote("alice", approval_id)
    answer = await _crashed_then_redelivered(world, request, params, write)

    assert (answer.status, answer.approvals_received) == ("pending", 1)
    assert [e.approvals_received for e in world.published(events.ApprovalVoted)] == [1]
    assert await _staged(world) == 0
    with pytest.raises(rpc.ProblemError, match="different people"):
        await world.vote("alice", approval_id)  # a new request by the same person: still counted once
    assert (await world.vote("bob", approval_id)).status == "approved"
    assert _final_decisions(world) == ["allow"]


@pytest.mark.parametrize(("write", "partly"), [("settle_approval", False), ("publish_staged", True)])
async def test_a_denial_redelivered_after_a_crash_denies_once(world, write, partly):
    approval_id = await _opened(world)
    request, params = _vote("carol", approval_id, "deny")
    answer = await _crashed_then_redelivered(world, request, params, write, partly=partly)

    assert (answer.status, answer.comment) == ("denied", "deny by carol")
    assert (await world.store.approval(TENANT, approval_id))[SETTLED_BY] == request.request_id
    assert len(world.published(events.ApprovalDenied)) == 1
    assert _final_decisions(world) == ["deny"]
    assert await _staged(world) == 0
    with pytest.raises(rpc.ProblemError, match="already denied"):
        await world.vote("dave", approval_id)


async def test_a_single_approval_redelivered_before_settling_is_settled_by_the_redelivery(world):
    """One approval required: the ballot alone satisfies it, and the first delivery died before settling."""
    approval_id = await _opened(world, approvals_required=1)
    request, params = _vote("alice", approval_id)
    answer = await _crashed_then_redelivered(world, request, params, "add_vote")
    assert (answer.status, answer.approvals_received) == ("approved", 1)
    assert _final_decisions(world) == ["allow"]
    assert len(world.published(events.ApprovalGranted)) == 1


@pytest.mark.parametrize("write", ["open_approval", "publish_staged"])
async def test_a_recovery_request_redelivered_after_a_crash_opens_one_approval(world, write):
    """Break-glass recovery: the approval's id is derived from the request, so a redelivery finds
    the one its first delivery opened (and sends its announcement if that was still waiting)."""
    from shared import commands_volumes as cv

    params = cv.OpenRecoveryApproval(volume_id="vol_1", key_id="key_1", device_id="dev_1", public_key="pk",
                                     reason="host lost")
    request = rpc.RpcRequest(method="open_recovery_approval", tenant_id=TENANT,
                             actor=Actor(kind="user", id="custodian"), params=params.model_dump())

    async def deliver(store: Any) -> c.ApprovalView:
        return await handlers_approvals.open_recovery_approval(request, params, store=store, targets=world.targets)

    with pytest.raises(Killed):
        await deliver(Dies(world.store, write))
    answer = await deliver(world.store)
    assert await deliver(world.store) == answer  # and again: nothing more happens
    assert answer.status == "pending"
    assert [a["approval_id"] for a in await world.store.list_approvals(TENANT, status=None, limit=10)] == [answer.approval_id]
    assert len(world.published(events.ApprovalRequested)) == 1
    assert await _staged(world) == 0
