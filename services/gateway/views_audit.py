"""The gateway's audit views: checkpoints, signing key, status, exports, forwarders, retention, reports.

All of them ask auditsvc over request/reply; the gateway never opens auditsvc's store.
"""

from __future__ import annotations

from aiohttp import web

from .views import _call, _json


async def list_checkpoints(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "list_checkpoints", **dict(request.query)))


async def signing_key(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "signing_keys"))


async def audit_status(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "status"))
