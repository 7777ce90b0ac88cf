"""Gateway views of the policy area: versions, settings, groups, approvals, decisions, dry-run and
device posture. All forward to policysvc by request/reply."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from aiohttp import web
from pydantic import ConfigDict, Field

from shared.commands import PutPolicy, Strict
from shared.commands_policy import PolicySettings
from shared.rpc import ProblemError

from .state import _call, _json, body_as

# --- bodies --------------------------------------------------------------------------------


class GroupBody(Strict):
    """A device group (static members and/or a `match` condition over facts) or a key group (members)."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, json_schema_extra={"allOf": [
        {"anyOf": [{"required": ["members"], "properties": {"members": {"minItems": 1}}},
                   {"required": ["match"], "properties": {"match": {"type": "object"}}}]},
        {"anyOf": [{"properties": {"kind": {"const": "device"}}},
                   {"properties": {"kind": {"const": "key"}, "match": {"type": "null"}}}]},
    ]})

    name: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9][A-Za-z0-9_.:@-]*$")
    kind: Literal["device", "key"]
    description: str = Field(default="", max_length=1024)
    members: list[Annotated[str, Field(min_length=1, max_length=200)]] = Field(default_factory=list, max_length=10_000)
    match: dict[str, Any] | None = None


class VoteBody(Strict):
    comment: str = Field(default="", max_length=1000)


class SimulateBody(Strict):
    """A candidate policy (replacing `policy_id` if given) replayed over requests or recorded traffic."""

    model_config = ConfigDict(extra="forbid", frozen=True, str_strip_whitespace=True, json_schema_extra={"oneOf": [
        {"required": ["requests"], "properties": {"requests": {"type": "array"}, "recorded_days": {"type": "null"}}},
        {"required": ["recorded_days"], "properties": {"recorded_days": {"type": "integer"}, "requests": {"type": "null"}}},
    ]})
    policy: PutPolicy
    policy_id: str | None = Field(default=None, max_length=100)
    requests: list[dict[str, Any]] | None = Field(default=None, max_length=5000)
    recorded_days: int | None = Field(default=None, ge=1, le=90)


class ClearQuarantineBody(Strict):
    reason: str = Field(min_length=1, max_length=500)


# --- policy versions -------------------------------------------------------------------------


def _version(request: web.Request) -> int:
    text = request.match_info["version"]
    if not text.isdigit() or not 1 <= int(text) <= 10**9:
        raise ProblemError(400, "Bad Request", "version must be a positive integer", "version")
    return int(text)


async def list_policy_versions(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "list_policy_versions", {"policy_id": request.match_info["policy_id"]}))


async def get_policy_version(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_policy_version",
                             {"policy_id": request.match_info["policy_id"], "version": _version(request)}))


async def restore_policy_version(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "restore_policy_version",
                             {"policy_id": request.match_info["policy_id"], "version": _version(request)}))


async def simulate(request: web.Request, body: SimulateBody) -> dict[str, Any]:
    """A dry run of a candidate policy (policysvc replays it); the API and the console both ask here."""
    if (body.requests is None) == (body.recorded_days is None):
        raise ProblemError(422, "Unprocessable Content", "give exactly one of requests or recorded_days", "requests")
    return await _call(request, "policysvc", "simulate", body.model_dump(exclude_none=True))


async def simulate_policy(request: web.Request) -> web.Response:
    return _json(await simulate(request, await body_as(request, SimulateBody)))


async def get_policy_settings(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_settings"))


async def put_policy_settings(request: web.Request) -> web.Response:
    # PolicySettings is strict on the bus; an HTTP body has always been read leniently (3600.0 is 3600).
    body = await body_as(request, PolicySettings, strict=False)
    return _json(await _call(request, "policysvc", "put_settings", body.model_dump()))


# --- groups ------------------------------------------------------------------------------------


async def create_group(request: web.Request) -> web.Response:
    body = await body_as(request, GroupBody)
    return _json(await _call(request, "policysvc", "put_group", {"group": body.model_dump(exclude_none=True)}), 201)


async def update_group(request: web.Request) -> web.Response:
    body = await body_as(request, GroupBody)
    return _json(await _call(request, "policysvc", "put_group",
                             {"group_id": request.match_info["group_id"], "group": body.model_dump(exclude_none=True)}))


async def list_groups(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "list_groups", {"kind": request.query.get("kind")}))


async def get_group(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_group", {"group_id": request.match_info["group_id"]}))


async def delete_group(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "delete_group", {"group_id": request.match_info["group_id"]}))


# --- approvals and decisions -------------------------------------------------------------------


async def list_approvals(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "list_approvals",
                             {"status": request.query.get("status"), "limit": request.query.get("limit")}))


async def get_approval(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_approval", {"approval_id": request.match_info["approval_id"]}))


async def vote(request: web.Request, approval_id: str, verdict: str, comment: str) -> dict[str, Any]:
    """The calling principal's vote on an approval (policysvc checks who may vote and counts it);
    the API and the console both vote here."""
    return await _call(request, "policysvc", "vote", {"approval_id": approval_id, "verdict": verdict, "comment": comment})


async def _vote(request: web.Request, verdict: str) -> web.Response:
    body = await body_as(request, VoteBody) if request.can_read_body else VoteBody()
    return _json(await vote(request, request.match_info["approval_id"], verdict, body.comment))


async def approve(request: web.Request) -> web.Response:
    return await _vote(request, "approve")


async def deny(request: web.Request) -> web.Response:
    return await _vote(request, "deny")


async def list_decisions(request: web.Request) -> web.Response:
    query = {k: request.query.get(k) for k in ("device_id", "key_id", "effect", "limit")}
    return _json(await _call(request, "policysvc", "list_decisions", query))


async def get_decision(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_decision", {"request_id": request.match_info["request_id"]}))


# --- device posture --------------------------------------------------------------------------


async def get_device_posture(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_posture", {"device_id": request.match_info["device_id"]}))


async def clear_device_quarantine(request: web.Request, device_id: str, body: ClearQuarantineBody) -> dict:
    """Lets a quarantined device be released keys again (API and console)."""
    return await _call(request, "policysvc", "clear_quarantine", {"device_id": device_id, "reason": body.reason})


async def clear_quarantine(request: web.Request) -> web.Response:
    body = await body_as(request, ClearQuarantineBody)
    return _json(await clear_device_quarantine(request, request.match_info["device_id"], body))
