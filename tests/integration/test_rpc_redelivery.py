"""A request the broker delivers twice changes state once and gets one answer.

The serving side acks a request message after its reply, so the broker hands a request whose
replica died mid-handling to another replica. These tests deliver the same request message twice
(same body, request id and correlation id, through the real RabbitMQ) to a real keysvc on the real
store, and show one effect and the same reply; then that a redelivery still creates nothing twice
when the dead replica made its change but not its record of the reply.
"""

from __future__ import annotations

import secrets

import pytest

from services.keysvc import app as keysvc_app
from services.keysvc.settings import KeySettings
from services.keysvc.store import KeyStore
from services.policysvc import app as policysvc_app
from services.policysvc.settings import PolicySettings
from shared.events import Actor
from shared.rpc import RpcRequest
from shared.store import service_database
from shared.store_replies import COLLECTION

from ..conftest import make_rabbit_bus

TENANT = "ten_redelivery"
ADMIN = Actor(kind="user", id="usr_admin")


@pytest.fixture
async def keysvc(amqp_url, mongo_client, db_prefix, prefix, tmp_path):
    """A keysvc instance serving RPCs, and a separate caller (the gateway's side) on the same broker."""
    settings = KeySettings(db_prefix=db_prefix, bus_prefix=f"{prefix}.", signing_key_file=str(tmp_path / "signing.pem"))
    service_bus = await make_rabbit_bus(amqp_url, f"{prefix}.")
    caller = await make_rabbit_bus(amqp_url, f"{prefix}.")
    running = await keysvc_app.start(settings, bus=service_bus, client=mongo_client, root_key=secrets.token_bytes(32))
    db = service_database(mongo_client, "keysvc", prefix=db_prefix)
    yield caller, KeyStore(db), db[COLLECTION], running
    await running.stop()
    await caller.close()
    await service_bus.destroy()
    await service_bus.close()


def _request(method: str, **params) -> RpcRequest:
    return RpcRequest(method=method, tenant_id=TENANT, actor=ADMIN, params=params)


async def _deliver(caller, request: RpcRequest):
    reply = await caller.call("keysvc", request, timeout=30.0)
    assert reply.problem is None, reply.problem
    return reply


async def test_create_key_delivered_twice_creates_one_key_and_answers_alike(keysvc):
    caller, store, replies, _ = keysvc
    create = _request("create_key", name="orders", activate=True)
    first = await _deliver(caller, create)
    assert await _deliver(caller, create) == first
    assert [h["key_id"] for h in await store.list_heads(TENANT)] == [first.result["key_id"]]

    # The replica made the key and died before recording its reply: the key id derives from the
    # request id, so the redelivery finds that key instead of making another.
    assert (await replies.delete_many({"tenant_id": TENANT, "request_id": create.request_id})).deleted_count == 1
    assert await _deliver(caller, create) == first
    assert len(await store.list_heads(TENANT)) == 1


async def test_rotate_key_delivered_twice_rotates_once_and_answers_alike(keysvc):
    caller, store, replies, running = keysvc
    key_id = (await _deliver(caller, _request("create_key", name="payroll", activate=True))).result["key_id"]
    unrotated = await store.load_key(TENANT, key_id)
    rotate = _request("rotate_key", key_id=key_id, rotate={"reason": "quarterly"})
    first = await _deliver(caller, rotate)
    assert first.result["latest_version"] == 2
    assert await _deliver(caller, rotate) == first
    assert (await store.load_key(TENANT, key_id)).latest_version == 2

    # Rotated, reply not recorded: the key remembers the request that last changed it, whether the
    # replica answering the redelivery has the key as it is now in its cache, or as it was before.
    for cached in ("current", "stale"):
        assert (await replies.delete_many({"tenant_id": TENANT, "request_id": rotate.request_id})).deleted_count == 1
        if cached == "stale":
            running.cache.put(unrotated)
        assert await _deliver(caller, rotate) == first, cached
        assert (await store.load_key(TENANT, key_id)).latest_version == 2
    # A new request (the operator rotating again) still rotates.
    assert (await _deliver(caller, _request("rotate_key", key_id=key_id, rotate={"reason": "again"}))).result[
        "latest_version"] == 3


@pytest.fixture
async def policysvc(amqp_url, mongo_client, db_prefix, prefix):
    service_bus = await make_rabbit_bus(amqp_url, f"{prefix}.")
    caller = await make_rabbit_bus(amqp_url, f"{prefix}.")
    running = await policysvc_app.start(PolicySettings(db_prefix=db_prefix, bus_prefix=f"{prefix}."), bus=service_bus,
                                        client=mongo_client)
    yield caller, service_database(mongo_client, "policysvc", prefix=db_prefix)
    await running.stop()
    await caller.close()
    await service_bus.destroy()
    await service_bus.close()


async def _twice(caller, db, request: RpcRequest):
    """Delivers `request`, again, and again once its recorded reply is gone (the replica stored
    the change and died before recording the reply); every answer is the first."""
    first = await caller.call("policysvc", request, timeout=30.0)
    assert first.problem is None, first.problem
    assert await caller.call("policysvc", request, timeout=30.0) == first
    await db[COLLECTION].delete_many({"tenant_id": TENANT, "request_id": request.request_id})
    assert await caller.call("policysvc", request, timeout=30.0) == first
    return first


async def test_put_policy_and_put_group_delivered_twice_store_one_version_and_answer_alike(policysvc):
    caller, db = policysvc
    rule = {"id": "eu", "effect": "allow", "when": {"fact": "identity.region", "op": "equals", "value": "eu-west-1"}}
    created = await _twice(caller, db, RpcRequest(method="put_policy", tenant_id=TENANT, actor=ADMIN,
                                                  params={"policy": {"name": "eu", "rules": [rule]}}))
    second = {"policy_id": created.result["policy_id"], "policy": {"name": "eu", "rules": [rule, {**rule, "id": "eu2"}]}}
    updated = await _twice(caller, db, RpcRequest(method="put_policy", tenant_id=TENANT, actor=ADMIN, params=second))
    assert updated.result["version"] == 2
    assert await db["policies"].count_documents({"tenant_id": TENANT}) == 1
    assert await db["policy_versions"].count_documents({"tenant_id": TENANT}) == 2

    group = {"name": "eu-fleet", "kind": "device", "members": ["dev_1"]}
    made = await _twice(caller, db, RpcRequest(method="put_group", tenant_id=TENANT, actor=ADMIN, params={"group": group}))
    replaced = await _twice(caller, db, RpcRequest(method="put_group", tenant_id=TENANT, actor=ADMIN, params={
        "group_id": made.result["group_id"], "group": {**group, "members": ["dev_1", "dev_2"]}}))
    assert replaced.result["version"] == 2
    assert await db["groups"].count_documents({"tenant_id": TENANT}) == 1
