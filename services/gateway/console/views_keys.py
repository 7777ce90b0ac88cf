"""Keys: the tenant's keys (state, versions, latest; filtered by state or name) and one key's page
(its versions and what each may still do, its lifecycle actions (suspend, resume, deactivate ...
as its state allows), rotate now, retire versions below N, schedule or cancel
its destruction with the dependency report, and the second custodian's approval). Every change is
a POST form with the session's CSRF token, validated by the API's own models and sent through the
API's own functions (`views.rotate`, `views_custody.retire` ...), so keysvc applies the same rules:
a destruction still needs a second custodian."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared import commands
from shared import commands_custody as cc
from shared.key_states import STATES
from shared.rpc import ProblemError

from .. import views, views_custody
from .names import user_name
from .present import filter_keys, key_versions, lifecycle_actions
from .web import render, see_other

_KEY_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")
PAGE = 1000  # keysvc's largest page: the console lists at most this many keys


async def index(request: web.Request) -> web.StreamResponse:
    state, name = request.query.get("state", ""), request.query.get("name", "")[:200]
    listed = await views.keys(request, commands.ListQuery(limit=PAGE))
    return render("keys.html", request, {
        "keys": filter_keys(listed["items"], state, name), "state": state, "name": name, "states": sorted(STATES)})


async def _optional(coro: Awaitable[dict]) -> dict | None:
    """A part of the page that may not exist (no destruction scheduled): None instead of 404."""
    try:
        return await coro
    except ProblemError as exc:
        if exc.problem.status == 404:
            return None
        raise


async def _page(request: web.Request, key_id: str, *, flash: str | None = None, error: str | None = None,
                status: int = 200) -> web.Response:
    try:
        key = await views.key(request, key_id)
    except ProblemError as exc:
        return render("key.html", request, {"key": None, "error": exc.problem.detail or exc.problem.title,
                                            "flash": None}, status=exc.problem.status)
    destruction = await _optional(views_custody.destruction(request, key_id))
    if destruction:
        destruction["scheduler"] = await user_name(request, destruction["scheduled_by"])
        destruction["approvers"] = [await user_name(request, by) for by in destruction.get("approvals") or ()]
    return render("key.html", request, {
        "key": key, "versions": key_versions(key), "flash": flash, "error": error, "destruction": destruction,
        "actions": lifecycle_actions(key.get("state", "")),
        "dependencies": await _optional(views_custody.dependency_report(request, key_id)),
    }, status=status)


def _key_id(request: web.Request) -> str:
    key_id = request.match_info["key_id"]
    if not _KEY_ID.match(key_id):
        raise web.HTTPNotFound(text="no such key")
    return key_id


DONE = {
    "rotated": "Rotated: the new version is the latest.",
    "retired": "Versions below the minimum no longer decrypt.",
    "scheduled": "Destruction scheduled; it waits for the waiting period and a second custodian.",
    "approved": "Your approval of the destruction is recorded.",
    "cancelled": "The destruction is cancelled.",
    "state": "The key's lifecycle state changed.",
}


async def detail(request: web.Request) -> web.StreamResponse:
    return await _page(request, _key_id(request), flash=DONE.get(request.query.get("done", "")))


Action = Callable[[web.Request, str, Any], Awaitable[dict]]


async def _act(request: web.Request, model: type[BaseModel], action: Action, fields: dict[str, Any],
               done: str) -> web.StreamResponse:
    """Validate the form with the API's model, run the API's function, then back to the key's page
    (303, so a reload does not repeat it); a refusal is shown on the page with its status."""
    key_id = _key_id(request)
    try:
        body = model.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "form"
        return await _page(request, key_id, error=f"{where}: {first['msg']}", status=422)
    try:
        await action(request, key_id, body)
    except ProblemError as exc:
        return await _page(request, key_id, error=exc.problem.detail or exc.problem.title, status=exc.problem.status)
    return see_other(f"/console/keys/{key_id}?done={done}")


async def _form(request: web.Request) -> dict[str, str]:
    return {k: v for k, v in (await request.post()).items() if isinstance(v, str) and k != "csrf_token"}


async def change_state(request: web.Request) -> web.StreamResponse:
    """A lifecycle action (suspend, resume, activate, deactivate, mark_compromised) as the API's
    `POST /v1/keys/{key_id}/state` takes it; keysvc refuses one the key's state does not allow."""
    form = await _form(request)
    return await _act(request, commands.ChangeKeyState, views.change_state,
                      {"action": form.get("action", ""), "reason": form.get("reason", "")}, "state")


async def rotate(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    return await _act(request, commands.RotateKey, views.rotate, {"reason": form.get("reason") or "rotation"},
                      "rotated")


async def retire(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    fields = {"min_decryption_version": form.get("min_decryption_version", ""), "reason": form.get("reason", "")}
    return await _act(request, cc.SetMinDecryptionVersion, views_custody.retire, fields, "retired")


async def schedule(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    fields: dict[str, Any] = {"reason": form.get("reason", ""), "force": form.get("force") == "on"}
    if form.get("wait_seconds"):
        fields["wait_seconds"] = form["wait_seconds"]
    return await _act(request, cc.ScheduleDestruction, views_custody.schedule, fields, "scheduled")


async def approve(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    return await _act(request, cc.ApproveDestruction, views_custody.approve,
                      {"reason": form.get("reason") or "approved"}, "approved")


async def cancel(request: web.Request) -> web.StreamResponse:
    form = await _form(request)
    return await _act(request, cc.CancelDestruction, views_custody.cancel, {"reason": form.get("reason", "")},
                      "cancelled")
