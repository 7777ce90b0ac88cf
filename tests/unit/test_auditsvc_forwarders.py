"""Forwarder handlers and the pool's batch step against memory stores: cursor, backoff, views, CAS."""

from __future__ import annotations

import pytest
from structlog.testing import capture_logs

from services.auditsvc import forwarders as rpc_forwarders
from services.auditsvc.forwarder_pool import forward_batch
from services.auditsvc.senders import SendError
from services.auditsvc.store_memory import MemoryAuditStore, MemoryForwarderStore
from shared import commands_audit as c
from shared import events
from shared.crypto.envelope import SecretBytes
from shared.crypto.sealing import SecretSealer
from shared.rpc import Methods, ProblemError, RpcRequest
from tests.unit.auditsvc_twins import Outbox, ingest, key_created, request


class Sender:
    def __init__(self, fail: int = 0):
        self.sent: list[bytes] = []
        self.fail = fail

    async def send(self, payload: bytes) -> None:
        if self.fail:
            self.fail -= 1
            raise SendError("connection refused")
        self.sent.append(payload)

    async def close(self) -> None:
        pass


def _deps():
    store, forwarders, outbox = MemoryAuditStore(), MemoryForwarderStore(), Outbox()
    sealer = SecretSealer(SecretBytes(b"k" * 32), service="test")
    return store, forwarders, outbox, sealer


async def _create(store, forwarders, outbox, sealer, **spec) -> c.ForwarderView:
    spec = {"name": "siem", "kind": "syslog_tcp", "host": "h", "port": 514, **spec}
    return await rpc_forwarders.create_forwarder(request(), c.ForwarderSpec(**spec), store=store, forwarders=forwarders,
                                                 outbox=outbox, sealer=sealer)


async def _step(store, forwarders, doc_id, sender, failures=0, batch_size=3):
    doc = await forwarders.forwarder("t1", doc_id)
    return await forward_batch(doc, sender, store=store, forwarders=forwarders, batch_size=batch_size,
                               hostname="h", failures=failures, max_backoff=1.0)


async def test_cursor_moves_only_after_the_destination_took_the_batch_and_backs_off_on_failure():
    store, forwarders, outbox, sealer = _deps()
    await ingest(store, [key_created("t1", i) for i in range(5)])
    view = await _create(store, forwarders, outbox, sealer)
    fid = view.model_dump()["forwarder_id"]
    sender = Sender(fail=2)

    assert await _step(store, forwarders, fid, sender) == (1, 0.25)
    doc = await forwarders.forwarder("t1", fid)
    assert doc["cursor"] == 0 and doc["status"] == "retrying" and doc["last_error"] == "connection refused"
    assert await _step(store, forwarders, fid, sender, failures=1) == (2, 0.5)

    assert await _step(store, forwarders, fid, sender, failures=2) == (0, 0.0)
    doc = await forwarders.forwarder("t1", fid)
    assert (doc["cursor"], doc["delivered"], doc["status"], doc["failures"]) == (3, 3, "active", 0)
    assert await _step(store, forwarders, fid, sender) == (0, 0.0)
    assert (await forwarders.forwarder("t1", fid))["cursor"] == 5
    assert await _step(store, forwarders, fid, sender) == (0, None)  # nothing waiting: poll
    assert len(sender.sent) == 2


async def test_each_batch_reports_how_old_the_oldest_unsent_record_is():
    """The forwarder-lag metric: the age of the oldest record not yet delivered, 0 once none waits."""
    store, forwarders, outbox, sealer = _deps()
    await ingest(store, [key_created("t1", i) for i in range(2)])
    fid = (await _create(store, forwarders, outbox, sealer)).model_dump()["forwarder_id"]
    heard: list[float] = []
    for _ in range(2):
        doc = await forwarders.forwarder("t1", fid)
        await forward_batch(doc, Sender(), store=store, forwarders=forwarders, batch_size=5, hostname="h", failures=0,
                            max_backoff=1.0, behind=heard.append)
    assert len(heard) == 2 and heard[0] > 0 and heard[1] == 0.0


async def test_unselected_records_move_the_cursor_without_a_send():
    store, forwarders, outbox, sealer = _deps()
    await ingest(store, [key_created("t1", i) for i in range(2)])
    fid = (await _create(store, forwarders, outbox, sealer, event_types=["device.*"])).model_dump()["forwarder_id"]
    sender = Sender()
    assert await _step(store, forwarders, fid, sender) == (0, 0.0)
    doc = await forwarders.forwarder("t1", fid)
    assert doc["cursor"] == 2 and doc["delivered"] == 0 and sender.sent == []


async def test_a_cursor_moved_by_another_owner_is_not_overwritten():
    store, forwarders, outbox, sealer = _deps()
    await ingest(store, [key_created("t1", i) for i in range(4)])
    fid = (await _create(store, forwarders, outbox, sealer)).model_dump()["forwarder_id"]
    stale = await forwarders.forwarder("t1", fid)
    await forwarders.advance_cursor("t1", fid, cursor=0, to=4, delivered=4, at=stale["created_at"])
    await forward_batch(stale, Sender(), store=store, forwarders=forwarders, batch_size=2, hostname="h",
                        failures=0, max_backoff=1.0)
    assert (await forwarders.forwarder("t1", fid))["cursor"] == 4


async def test_views_hide_secrets_and_show_lag():
    store, forwarders, outbox, sealer = _deps()
    await ingest(store, [key_created("t1", i) for i in range(3)])
    created = (await _create(store, forwarders, outbox, sealer, kind="webhook", host=None, port=None,
                             url="https://h/x?token=t")).model_dump()
    assert created["secret"].startswith("whsec_") and created["destination"] == "https://h/x"
    assert created["lag_records"] == 3 and "url" not in created
    shown = (await rpc_forwarders.get_forwarder(request(), c.ForwarderRef(forwarder_id=created["forwarder_id"]),
                                                store=store, forwarders=forwarders)).model_dump()
    assert "secret" not in shown and "lease_owner" not in shown
    assert [type(e) for e in outbox.published] == [events.ForwarderCreated]


async def test_changes_rotation_and_deletion():
    store, forwarders, outbox, sealer = _deps()
    fid = (await _create(store, forwarders, outbox, sealer)).model_dump()["forwarder_id"]
    with pytest.raises(ProblemError) as nothing:
        await rpc_forwarders.update_forwarder(request(), c.UpdateForwarder(forwarder_id=fid, change={}),
                                              store=store, forwarders=forwarders, outbox=outbox)
    assert nothing.value.problem.field == "body"
    changed = await rpc_forwarders.update_forwarder(
        request(), c.UpdateForwarder(forwarder_id=fid, change={"format": "cef"}), store=store, forwarders=forwarders,
        outbox=outbox)
    assert changed.model_dump()["format"] == "cef"
    with pytest.raises(ProblemError) as syslog:
        await rpc_forwarders.rotate_forwarder_secret(request(), c.ForwarderRef(forwarder_id=fid), store=store,
                                                     forwarders=forwarders, outbox=outbox, sealer=sealer)
    assert syslog.value.problem.status == 409
    deleted = await rpc_forwarders.delete_forwarder(request(), c.ForwarderRef(forwarder_id=fid), forwarders=forwarders,
                                                    outbox=outbox)
    assert deleted.model_dump() == {"forwarder_id": fid, "deleted": True}
    with pytest.raises(ProblemError) as gone:
        await rpc_forwarders.get_forwarder(request("t1"), c.ForwarderRef(forwarder_id=fid), store=store,
                                           forwarders=forwarders)
    assert gone.value.problem.status == 404


async def test_another_tenant_cannot_see_a_forwarder():
    store, forwarders, outbox, sealer = _deps()
    fid = (await _create(store, forwarders, outbox, sealer)).model_dump()["forwarder_id"]
    with pytest.raises(ProblemError):
        await rpc_forwarders.get_forwarder(request("t2"), c.ForwarderRef(forwarder_id=fid), store=store,
                                           forwarders=forwarders)


async def test_params_named_like_a_handler_keyword_are_refused_not_spread():
    store, forwarders, _, _ = _deps()
    methods = Methods()
    methods.add("list_forwarders", lambda req, p: rpc_forwarders.list_forwarders(req, p, store=store,
                                                                                  forwarders=forwarders),
                params=c.NoParams, result=c.ForwarderList)
    for params in ({"store": "x"}, {"request": "x"}, {"forwarders": 1}):
        with pytest.raises(ProblemError) as refused:  # the bus answers it as a problem
            await methods(RpcRequest(method="list_forwarders", tenant_id="t1", params=params))
        assert refused.value.problem.status == 422 and refused.value.problem.field == next(iter(params))
    reply = await methods(RpcRequest(method="list_forwarders", tenant_id="t1"))
    assert reply.model_dump(mode="json")["result"] == {"items": []}


async def test_a_destination_resolving_to_loopback_is_refused_before_anything_is_stored():
    store, forwarders, outbox, sealer = _deps()

    async def rebinding_dns(host: str, port: int) -> list[str]:
        return ["127.0.0.1"]

    for spec in ({"kind": "syslog_tcp", "host": "siem.example", "port": 514},
                 {"kind": "webhook", "url": "https://siem.example/hook"}):
        with pytest.raises(ProblemError) as refused:
            await rpc_forwarders.create_forwarder(
                request(), c.ForwarderSpec(name="x", **spec), store=store, forwarders=forwarders, outbox=outbox,
                sealer=sealer, allow=(), resolve=rebinding_dns)
        problem = refused.value.problem
        assert problem.status == 422 and problem.field == ("url" if spec["kind"] == "webhook" else "host")
        assert "siem.example" not in problem.detail and "127.0.0.1" not in problem.detail
    assert await forwarders.list_forwarders("t1") == [] and outbox.published == []


async def test_the_tenant_reads_a_generic_error_and_the_log_keeps_the_detail():
    store, forwarders, outbox, sealer = _deps()
    await ingest(store, [key_created("t1", 0)])
    fid = (await _create(store, forwarders, outbox, sealer)).model_dump()["forwarder_id"]

    class Failing(Sender):
        async def send(self, payload: bytes) -> None:
            raise SendError("cannot connect to the destination", "ClientConnectorError: 10.0.0.7:514 refused")

    with capture_logs() as logs:
        await _step(store, forwarders, fid, Failing())
    doc = await forwarders.forwarder("t1", fid)
    assert doc["last_error"] == "cannot connect to the destination"
    (line,) = [entry for entry in logs if entry["event"] == "forwarder_send_failed"]
    assert line["detail"] == "ClientConnectorError: 10.0.0.7:514 refused" and line["tenant_id"] == "t1"
