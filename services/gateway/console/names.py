"""Readable names for the ids the console shows: devices and people, from the gateway's own
cached lookups (the ones authentication uses), the id itself when nothing is found."""

from __future__ import annotations

from aiohttp import web

from ..state import GATEWAY, PRINCIPAL


async def device_name(request: web.Request, device_id: str) -> str:
    doc = await request.app[GATEWAY].devices.device(request[PRINCIPAL].tenant_id, device_id)
    return (doc or {}).get("name") or device_id


async def user_name(request: web.Request, user_id: str) -> str:
    doc = await request.app[GATEWAY].operators.user(request[PRINCIPAL].tenant_id, user_id)
    return (doc or {}).get("username") or user_id
