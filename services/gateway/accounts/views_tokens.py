"""API tokens: personal tokens for people and, minted by a tenant admin, service-account tokens;
scoped, expiring, shown once, revocable."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from shared import events
from shared.crypto import tokens
from shared.rpc import NotFound, ProblemError

from ..auth import Principal
from ..state import PRINCIPAL, _json, _now, body_as
from . import schemas as S
from .common import account_store, context, event_fields


def token_view(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: doc.get(k) for k in ("token_id", "name", "user_id", "kind", "scopes", "created_at", "expires_at", "revoked")}


async def create_token(request: web.Request) -> web.Response:
    """A personal API token for the caller, or (tenant admin) a service account's token; shown once."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.CreateToken)
    if principal.kind not in ("user", "provider"):
        raise ProblemError(403, "Forbidden", "only people create tokens", "service_account_id")
    scopes = frozenset(body.scopes) if body.scopes is not None else None
    if principal.scopes is not None and (scopes is None or not scopes <= principal.scopes):
        # SECURITY: a scoped token never mints a broader one.
        raise ProblemError(403, "Forbidden", "a scoped token may only create tokens within its scopes", "scopes")
    owner, kind = principal.id, "personal"
    if body.service_account_id is not None:
        if not principal.may("tokens.manage"):
            raise ProblemError(403, "Forbidden", "requires permission tokens.manage", "service_account_id")
        target = await account_store(gw).active_service_account(principal.tenant_id, body.service_account_id)
        if target is None:
            raise NotFound("service account", "service_account_id")
        owner, kind = target["user_id"], "service"
    elif scopes is not None and not all(principal.may(s) for s in scopes):
        raise ProblemError(422, "Unprocessable Content", "scopes must be permissions you hold", "scopes")
    token = tokens.new_token("sr_pat" if kind == "personal" else "sr_svc")
    now = _now()
    doc = {"token_id": events.new_id("tok_"), "name": body.name, "user_id": owner, "kind": kind,
           "scopes": sorted(scopes) if scopes is not None else None, "digest": tokens.digest(token),
           "created_by": principal.id, "created_at": now,
           "expires_at": now + timedelta(seconds=body.expires_in_seconds), "revoked": False}
    event = events.TokenCreated(**event_fields(request, principal.tenant_id), token_id=doc["token_id"], name=body.name,
                                role=",".join(doc["scopes"] or ["owner"]), user_id=owner, expires_at=doc["expires_at"])
    await account_store(gw).insert_token(principal.tenant_id, doc, event)
    return _json({**token_view(doc), "token": token}, 201)


async def list_tokens(request: web.Request) -> web.Response:
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    owner = None if principal.may("tokens.manage") else principal.id
    docs = await account_store(gw).list_tokens(principal.tenant_id, owner=owner)
    return _json({"items": [token_view(d) for d in docs]})


async def revoke_token(request: web.Request) -> web.Response:
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    token_id = request.match_info["token_id"]
    owner = None if principal.may("tokens.manage") else principal.id
    event = events.TokenRevoked(**event_fields(request, principal.tenant_id), token_id=token_id)
    if not await account_store(gw).revoke_token(principal.tenant_id, token_id, owner=owner, at=_now(), event=event):
        raise NotFound("token", "token_id")
    gw.operators.forget(token_id)
    return web.Response(status=204)
