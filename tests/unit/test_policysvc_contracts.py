"""policysvc's request/reply methods: each declares its models, refuses a malformed call naming the
field, and answers the JSON it always has (keys absent stay absent)."""

from __future__ import annotations

import json

import pytest

from services.policysvc.app import rpc_methods
from shared import rpc

from .policysvc_world import TENANT, World, eu_rule, policy


def _methods(world: World) -> rpc.Methods:
    return rpc_methods(store=world.store, cache=world.cache, targets=world.targets, wake=world.wake)


async def _call(methods: rpc.Methods, method: str, **params) -> rpc.RpcReply:
    reply = await methods(rpc.RpcRequest(method=method, tenant_id=TENANT, params=params))
    return rpc.decode_reply(rpc.encode(reply))  # through JSON, as on the bus


def test_every_method_declares_params_and_result():
    contracts = _methods(World()).contracts()
    assert len(contracts) == 26
    assert all(params is not None and result is not None for params, result in contracts.values())


async def test_a_malformed_call_is_refused_naming_the_field():
    methods = _methods(World())
    reply = await _call(methods, "vote", approval_id="apr_1", verdict="maybe")
    assert reply.problem is not None and (reply.problem.status, reply.problem.field) == (422, "verdict")
    with pytest.raises(rpc.ProblemError) as refused:  # the bus answers a handler's problem
        await _call(methods, "list_approvals", status="lost")
    assert (refused.value.problem.status, refused.value.problem.field) == (400, "status")


async def test_answers_keep_their_json_shape():
    world = World()
    methods = _methods(world)
    await world.put_policy(policy("p", eu_rule("require_approval")))
    await world.enroll("dev_1")
    pending = await world.ask("dev_1", request_id="req_1")
    await world.ask("dev_1", key_id="key_2", facts={}, request_id="req_2")
    status = (await _call(methods, "request_status", request_id="req_1", device_id="dev_1")).result
    assert set(status) == {"request_id", "status", "disclosed", "approvals_required", "approvals_received", "expires_at"}
    denied = (await _call(methods, "request_status", request_id="req_2", device_id="dev_1")).result
    assert set(denied) == {"request_id", "status", "disclosed"} and denied["status"] == "denied"
    detail = (await _call(methods, "get_decision", request_id="req_1")).result
    assert detail["trace_verified"] is True and detail["approval"]["approval_id"] == pending.disclosed["approval_id"]
    assert "approval" not in (await _call(methods, "get_decision", request_id="req_2")).result
    approval = (await _call(methods, "get_approval", approval_id=pending.disclosed["approval_id"])).result
    assert approval["decided_at"] is None and approval["votes"] == [] and approval["expires_at"].endswith("Z")
    group = (await _call(methods, "put_group", group={"name": "eu", "kind": "key", "members": ["key_1"]})).result
    assert set(group) == {"group_id", "version", "name", "kind", "members", "updated_at", "updated_by"}
    json.dumps(detail)
