"""keysvc's key lifecycle handlers over the in-memory store: create, rotate (by hand and when due), state changes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from services.keysvc import handlers_keys as h
from services.keysvc.clock import now
from shared import commands
from shared.rpc import ProblemError

from .keysvc_fakes import TENANT, keysvc, request


async def _create(k, name="vol-1", **fields):
    return await h.create_key(request("create_key"), commands.CreateKey(name=name, **fields), **k.deps)


async def test_a_rotation_adds_a_version_and_publishes_the_event_staged_with_it():
    k = keysvc()
    view = await _create(k)
    assert view.latest_version == 1 and view.state == "active"
    call = commands.RotateKeyCall(key_id=view.key_id, rotate=commands.RotateKey(reason="quarterly"))
    rotated = await h.rotate_key(request("rotate_key"), call, **k.deps)
    assert rotated.latest_version == 2 and rotated.min_decryption_version == 1
    assert k.outbox.types() == ["key.created", "key.rotated"]
    assert [e.type for e in k.store.staged] == ["key.created", "key.rotated"]
    stored = await k.restarted().store.load_key(TENANT, view.key_id)
    assert stored is not None and sorted(stored.versions) == [1, 2]
    assert "wrapped" not in rotated.model_dump_json()  # metadata only


async def test_a_duplicate_name_and_an_illegal_rotation_are_refused():
    k = keysvc()
    view = await _create(k)
    with pytest.raises(ProblemError) as exc:
        await _create(k)
    assert exc.value.problem.status == 409 and exc.value.problem.field == "name"
    change = commands.ChangeKeyStateCall(key_id=view.key_id,
                                         change=commands.ChangeKeyState(action="deactivate", reason="retired"))
    assert (await h.change_key_state(request("change_key_state"), change, store=k.store, cache=k.cache,
                                     outbox=k.outbox)).state == "deactivated"
    with pytest.raises(ProblemError) as exc:
        await h.rotate_key(request("rotate_key"), commands.RotateKeyCall(key_id=view.key_id, rotate=commands.RotateKey()),
                           **k.deps)
    assert exc.value.problem.status == 409
    with pytest.raises(ProblemError) as exc:
        await h.change_key_state(request("change_key_state"), commands.ChangeKeyStateCall(
            key_id=view.key_id, change=commands.ChangeKeyState(action="resume", reason="no")),
            store=k.store, cache=k.cache, outbox=k.outbox)
    assert exc.value.problem.field == "action"


async def test_a_key_past_its_rotation_period_rotates_once_and_a_deactivated_one_not_at_all():
    k = keysvc()
    due = await _create(k, "due", rotation_period_seconds=3600)
    idle = await _create(k, "idle", rotation_period_seconds=3600)
    await h.change_key_state(request("change_key_state"), commands.ChangeKeyStateCall(
        key_id=idle.key_id, change=commands.ChangeKeyState(action="deactivate", reason="done")),
        store=k.store, cache=k.cache, outbox=k.outbox)
    assert await h.rotate_due_keys(**k.deps) == 0  # not due yet
    an_hour_ago = now() - timedelta(seconds=3601)
    for d in k.store.versions.values():
        d["created_at"] = an_hour_ago
    for head in k.store.heads.values():
        head["latest_material"]["created_at"] = an_hour_ago
        head["next_rotation_at"] = an_hour_ago + timedelta(seconds=3600)
    k.store.heads[(TENANT, idle.key_id)]["next_rotation_at"] = an_hour_ago  # even if listed, it is not rotatable
    other = k.restarted()
    assert await h.rotate_due_keys(**other.deps) == 1
    assert await h.rotate_due_keys(**other.deps) == 0  # the new version is fresh
    assert (await other.store.load_key(TENANT, due.key_id)).latest_version == 2
    assert (await other.store.load_key(TENANT, idle.key_id)).latest_version == 1
