"""keysvc's tenant KEK rotation over the in-memory store: the re-wrap walk resumes after a crash and finishes once."""

from __future__ import annotations

import pytest

from services.keysvc import handlers_kek as h
from services.keysvc import handlers_keys
from services.keysvc import kek_rotation as rotation
from shared import commands
from shared.rpc import ProblemError

from .keysvc_fakes import TENANT, keysvc, request


def test_a_step_advances_on_a_page_sweeps_again_for_stragglers_and_finishes_when_nothing_is_left():
    assert rotation.next_step(page_size=3, left=0) is rotation.Next.ADVANCE
    assert rotation.next_step(page_size=0, left=2) is rotation.Next.SWEEP_AGAIN
    assert rotation.next_step(page_size=0, left=0) is rotation.Next.FINISH
    page = [{"kek_version": 1, "wrapped": b"x"}, {"kek_version": 2, "wrapped": b"y"}, {"kek_version": 1}]
    assert rotation.to_rewrap(page, 2) == [page[0]]  # done and destroyed versions are skipped
    assert rotation.final_count(3, 5) == 5 and rotation.final_count(5, 3) == 5
    assert rotation.status_view(None) is None
    assert "cursor" not in rotation.status_view({"cursor": 7, "rotation_id": "kro_1"})


async def test_a_rotation_cut_short_resumes_from_its_cursor_and_every_key_opens_under_the_new_kek():
    k = keysvc()
    ids = []
    for i in range(5):
        view = await handlers_keys.create_key(request("create_key"), commands.CreateKey(name=f"vol-{i}"), **k.deps)
        ids.append(view.key_id)
    await handlers_keys.rotate_key(request("rotate_key"), commands.RotateKeyCall(
        key_id=ids[0], rotate=commands.RotateKey()), **k.deps)
    started = await h.rotate_kek(request("rotate_kek"), commands.NoParams(), store=k.store, hierarchy=k.hierarchy,
                                 outbox=k.outbox)
    assert started.to_version == 2 and started.total == 6 and started.cursor is None
    with pytest.raises(ProblemError):  # one rotation at a time
        await h.rotate_kek(request("rotate_kek"), commands.NoParams(), store=k.store, hierarchy=k.hierarchy,
                           outbox=k.outbox)

    step = {"cache": k.cache, "outbox": k.outbox, "batch": 2}
    assert await h.rewrap_step(store=k.store, hierarchy=k.hierarchy, **step) == 2
    # A key created meanwhile, then a crash: a fresh instance resumes from the saved cursor.
    late = await handlers_keys.create_key(request("create_key"), commands.CreateKey(name="late"), **k.deps)
    other = k.restarted()
    while await h.rewrap_step(store=other.store, hierarchy=other.hierarchy, **step):
        pass
    status = await h.kek_status(request("kek_status"), commands.NoParams(), store=other.store)
    assert status.kek_version == 2 and status.rotation.status == "done"
    assert "cursor" not in status.model_dump()["rotation"]
    assert await other.store.kek_versions(TENANT) == [2]  # the old KEK is retired
    assert k.outbox.types().count("kek.rotated") == 1

    fresh = other.restarted()
    for key_id in [*ids, late.key_id]:
        key = await fresh.store.load_key(TENANT, key_id)
        for kv in key.versions.values():
            assert kv.kek_version == 2
            data_key = await fresh.hierarchy.open_data_key(TENANT, key_id, kv.version, kv.wrapped, kv.kek_version)
            assert len(data_key) == 32
        view = await fresh.store.load_release_view(TENANT, key_id)
        assert view.versions[view.latest_version].kek_version == 2  # the head's copy followed
