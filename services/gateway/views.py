"""The gateway's plain views: health, and the key, policy and audit routes that are forwarded
to their services by request/reply. Authentication and the permission check have already run
(see `guard.py`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from shared import commands, observability
from shared.store import STORE_UNAVAILABLE

from .problems import RETRY_AFTER_UNAVAILABLE_SECONDS
from .state import PROBE, _call, _gw, _json, _now, _query, body_as


async def health(request: web.Request) -> web.Response:
    """The gateway and what it depends on, honestly: 503 (with Retry-After) while the store does
    not answer within its timeout, the broker connection is down, or a work-queue consumer on this
    process's bus has stopped making progress (`shared/progress.py`)."""
    gw = _gw(request)
    try:
        await asyncio.wait_for(gw.store.ping(), gw.settings.store_timeout_seconds)
        store = "ok"
    except (*STORE_UNAVAILABLE, TimeoutError):
        store = "unavailable"
    stalled = gw.bus.stalled()
    bus = "stalled" if stalled else "ok" if gw.bus.connected() else "unavailable"
    ok = store == bus == "ok"
    body = {"status": "ok" if ok else "unavailable", "store": store, "bus": bus, "time": _now().isoformat()}
    if stalled:
        body["stalled_consumers"] = stalled
    response = _json(body, 200 if ok else 503)
    if not ok:
        response.headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE_SECONDS)
    return response


async def live(request: web.Request) -> web.Response:
    return await observability.live(request)


async def ready(request: web.Request) -> web.Response:
    """The same readiness every service gives (`shared/observability.py`): 503 naming what fails."""
    return await observability.ready_response(request.app[PROBE])


async def metrics(request: web.Request) -> web.Response:
    return await observability.metrics_response(request.app[PROBE].metrics)


async def create_key(request: web.Request) -> web.Response:
    body = await body_as(request, commands.CreateKey)
    return _json(await _call(request, "keysvc", "create_key", body.model_dump()), 201)


async def keys(request: web.Request, query: commands.ListQuery) -> dict:
    """A page of the tenant's keys (metadata only), as keysvc lists them (API and console)."""
    return await _call(request, "keysvc", "list_keys", query.model_dump())


async def key(request: web.Request, key_id: str) -> dict:
    """One key's metadata and version pointers (API and console)."""
    return await _call(request, "keysvc", "get_key", {"key_id": key_id})


async def rotate(request: web.Request, key_id: str, body: commands.RotateKey) -> dict:
    """Add a new latest version of the key (API and console)."""
    return await _call(request, "keysvc", "rotate_key", {"key_id": key_id, "rotate": body.model_dump()})


async def list_keys(request: web.Request) -> web.Response:
    return _json(await keys(request, _query(request, commands.ListQuery)))


async def get_key(request: web.Request) -> web.Response:
    return _json(await key(request, request.match_info["key_id"]))


async def rotate_key(request: web.Request) -> web.Response:
    body = await body_as(request, commands.RotateKey) if request.can_read_body else commands.RotateKey()
    return _json(await rotate(request, request.match_info["key_id"], body))


async def change_state(request: web.Request, key_id: str, body: commands.ChangeKeyState) -> dict:
    """A lifecycle action on the key (activate, suspend, resume, deactivate, mark_compromised),
    as keysvc's lifecycle allows it from the key's state (API and console)."""
    return await _call(request, "keysvc", "change_key_state", {"key_id": key_id, "change": body.model_dump()})


async def change_key_state(request: web.Request) -> web.Response:
    body = await body_as(request, commands.ChangeKeyState)
    return _json(await change_state(request, request.match_info["key_id"], body))


async def create_policy(request: web.Request) -> web.Response:
    body = await body_as(request, commands.PutPolicy)
    return _json(await _call(request, "policysvc", "put_policy", {"policy": body.model_dump()}), 201)


async def update_policy(request: web.Request) -> web.Response:
    body = await body_as(request, commands.PutPolicy)
    return _json(await _call(request, "policysvc", "put_policy",
                             {"policy_id": request.match_info["policy_id"], "policy": body.model_dump()}))


async def list_policies(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "list_policies"))


async def get_policy(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "get_policy", {"policy_id": request.match_info["policy_id"]}))


async def delete_policy(request: web.Request) -> web.Response:
    return _json(await _call(request, "policysvc", "delete_policy", {"policy_id": request.match_info["policy_id"]}))


async def list_audit(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "list_records", dict(request.query)))
