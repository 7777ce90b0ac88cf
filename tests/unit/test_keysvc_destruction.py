"""keysvc's destruction handlers over the in-memory store: schedule, dual control, the scheduler's run."""

from __future__ import annotations

from datetime import timedelta

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.keysvc import handlers_destruction as h
from services.keysvc import handlers_keys
from services.keysvc.signer import Signer
from shared import commands
from shared import commands_custody as cc
from shared.certificates import verify_certificate
from shared.rpc import ProblemError

from .keysvc_fakes import TENANT, keysvc, request


async def _retired_key(k) -> str:
    view = await handlers_keys.create_key(request("create_key"), commands.CreateKey(name="old"), **k.deps)
    await handlers_keys.change_key_state(request("change_key_state"), commands.ChangeKeyStateCall(
        key_id=view.key_id, change=commands.ChangeKeyState(action="deactivate", reason="retired")),
        store=k.store, cache=k.cache, outbox=k.outbox)
    return view.key_id


async def _schedule(k, key_id: str, actor="alice"):
    call = cc.ScheduleDestructionCall(key_id=key_id, schedule=cc.ScheduleDestruction(reason="eol", wait_seconds=60))
    return await h.schedule_destruction(request("schedule_destruction", actor), call, store=k.store, cache=k.cache,
                                        min_wait=timedelta(seconds=1), outbox=k.outbox)


async def _approve(k, key_id: str, actor: str):
    call = cc.ApproveDestructionCall(key_id=key_id, approve=cc.ApproveDestruction())
    return await h.approve_destruction(request("approve_destruction", actor), call, store=k.store, outbox=k.outbox)


async def test_a_live_key_cannot_be_scheduled_and_a_scheduled_one_only_once():
    k = keysvc()
    live = await handlers_keys.create_key(request("create_key"), commands.CreateKey(name="live"), **k.deps)
    with pytest.raises(ProblemError) as exc:
        await _schedule(k, live.key_id)
    assert exc.value.problem.status == 409 and exc.value.problem.field == "key_id"
    key_id = await _retired_key(k)
    view = await _schedule(k, key_id)
    assert view.status == "scheduled" and view.dependencies.releases == 0
    assert "certificate" not in view.model_dump()  # unset optional keys stay off the wire
    with pytest.raises(ProblemError):
        await _schedule(k, key_id)


async def test_dual_control_then_the_run_shreds_the_material_and_signs_a_certificate():
    k = keysvc()
    signer = Signer(Ed25519PrivateKey.generate())
    key_id = await _retired_key(k)
    await _schedule(k, key_id, actor="alice")
    with pytest.raises(ProblemError) as exc:
        await _approve(k, key_id, "alice")
    assert exc.value.problem.status == 403  # the scheduler cannot approve their own request
    approved = await _approve(k, key_id, "bob")
    assert approved.approvals == ["bob"]

    run = {"store": k.store, "cache": k.cache, "signer": signer, "outbox": k.outbox}
    assert await h.run_due_destructions(**run) == 0  # the waiting period is not over
    k.store.destructions[(TENANT, key_id)]["not_before"] -= timedelta(seconds=61)
    status = await h.get_destruction(request("get_destruction"), commands.KeyRef(key_id=key_id), store=k.store)
    assert status.ready is True and status.waiting_for is None
    assert await h.run_due_destructions(**run) == 1
    assert await h.run_due_destructions(**run) == 0  # done once

    key = await k.store.load_key(TENANT, key_id)
    assert key.state == "destroyed" and all(v.wrapped is None for v in key.versions.values())
    cert = await h.get_certificate(request("get_destruction_certificate"), commands.KeyRef(key_id=key_id), store=k.store)
    assert verify_certificate(cert.certificate, cert.signature, signer.private_key.public_key())
    assert cert.certificate["approvers"] == ["bob"] and cert.certificate["scheduled_by"] == "alice"
    assert k.outbox.types()[-3:] == ["key.destruction_approved", "key.state_changed", "key.destroyed"]
    with pytest.raises(ProblemError):
        await h.cancel_destruction(request("cancel_destruction"), cc.CancelDestructionCall(
            key_id=key_id, cancel=cc.CancelDestruction(reason="too late")), store=k.store, outbox=k.outbox)


async def test_a_run_cut_short_after_its_claim_resumes_and_a_cancelled_one_never_runs():
    k = keysvc()
    signer = Signer(Ed25519PrivateKey.generate())
    run = {"store": k.store, "cache": k.cache, "signer": signer, "outbox": k.outbox}
    key_id = await _retired_key(k)
    await _schedule(k, key_id)
    await _approve(k, key_id, "bob")
    k.store.destructions[(TENANT, key_id)].update(status="destroying", certificate={"signing_key_id": signer.key_id},
                                                  signature="sig")
    assert await h.run_due_destructions(**run) == 1
    assert k.store.destructions[(TENANT, key_id)]["status"] == "destroyed"

    other = await handlers_keys.create_key(request("create_key"), commands.CreateKey(name="spare", activate=False),
                                           **k.deps)
    await _schedule(k, other.key_id)
    await _approve(k, other.key_id, "bob")
    cancelled = await h.cancel_destruction(request("cancel_destruction"), cc.CancelDestructionCall(
        key_id=other.key_id, cancel=cc.CancelDestruction(reason="still needed")), store=k.store, outbox=k.outbox)
    assert cancelled.status == "cancelled" and cancelled.cancelled_by == "alice"
    k.store.destructions[(TENANT, other.key_id)]["not_before"] -= timedelta(days=1)
    assert await h.run_due_destructions(**run) == 0
    assert (await k.store.load_key(TENANT, other.key_id)).state == "pre_activation"
    assert (await _schedule(k, other.key_id)).status == "scheduled"  # a cancelled one may be replaced
