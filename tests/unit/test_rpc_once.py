"""rpc.Methods runs a state-changing method once per request id and answers its redeliveries from the
recorded reply; reads run every time and record nothing. (The store behind it is shown with the
real keysvc, store and broker in tests/integration/test_rpc_redelivery.py.)"""

from __future__ import annotations

from types import SimpleNamespace

from services.keysvc import app as keysvc_app
from services.policysvc.app import CHANGES as POLICY_CHANGES
from shared.rpc import Methods, ProblemError, RpcReply, RpcRequest, derived_id


class MemoryReplies:
    def __init__(self) -> None:
        self.replies: dict[tuple[str, str, str], RpcReply] = {}

    async def recorded(self, request: RpcRequest) -> RpcReply | None:
        return self.replies.get((request.tenant_id, request.request_id, request.method))

    async def record(self, request: RpcRequest, reply: RpcReply) -> None:
        self.replies.setdefault((request.tenant_id, request.request_id, request.method), reply)


def _table() -> tuple[Methods, MemoryReplies, list[str]]:
    replies, runs = MemoryReplies(), []

    async def create(request, params):
        runs.append(request.method)
        return {"made": len(runs)}

    async def refuse(request, params):
        runs.append(request.method)
        raise ProblemError(409, "Conflict", f"refused on run {len(runs)}")

    async def read(request, params):
        runs.append(request.method)
        return {"read": len(runs)}

    methods = Methods(replies)
    methods.add("create", create, changes=True)
    methods.add("refuse", refuse, changes=True)
    methods.add("read", read)
    return methods, replies, runs


def _request(method: str, tenant_id: str = "ten_a") -> RpcRequest:
    return RpcRequest(method=method, tenant_id=tenant_id)


async def test_a_change_delivered_again_runs_once_and_answers_alike():
    methods, replies, runs = _table()
    request = _request("create")
    first = await methods(request)
    assert await methods(request) == first == RpcReply(result={"made": 1})
    assert runs == ["create"]
    assert await methods(_request("create")) == RpcReply(result={"made": 2})  # a new request runs


async def test_a_refusal_is_recorded_too_so_a_redelivery_cannot_turn_it_into_an_effect():
    methods, _, runs = _table()
    request = _request("refuse")
    first = await methods(request)
    assert first.problem is not None and first.problem.detail == "refused on run 1"
    assert await methods(request) == first and runs == ["refuse"]


async def test_reads_run_every_time_and_record_nothing():
    methods, replies, runs = _table()
    request = _request("read")
    assert (await methods(request)).result == {"read": 1}
    assert (await methods(request)).result == {"read": 2}
    assert replies.replies == {}


def test_request_ids_are_per_message_and_derived_ids_per_request():
    one, two = _request("create"), _request("create")
    assert one.request_id != two.request_id
    copied = RpcRequest.model_validate_json(one.model_dump_json())  # a redelivery decodes the same body
    assert derived_id(copied, "key_") == derived_id(one, "key_") != derived_id(two, "key_")
    other_tenant = one.model_copy(update={"tenant_id": "ten_b"})
    assert derived_id(other_tenant, "key_") != derived_id(one, "key_")


def test_every_service_records_its_operator_changes():
    assert {"put_policy", "delete_policy", "vote", "put_group", "put_settings"} <= POLICY_CHANGES
    assert "heartbeat" not in POLICY_CHANGES and "get_policy" not in POLICY_CHANGES
    methods = Methods()
    parts = SimpleNamespace(store=None, hierarchy=None, cache=None, outbox=None)
    keysvc_app._key_methods(methods, parts)  # type: ignore[arg-type]
    assert methods.changing() == {"create_key", "change_key_state", "rotate_key", "set_min_decryption_version",
                                  "put_custody_settings", "import_key", "rotate_kek"}
