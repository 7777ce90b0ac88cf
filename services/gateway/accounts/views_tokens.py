"""API tokens: personal tokens for people and, minted by a tenant admin, service-account tokens;
scoped, expiring, shown once, revocable. A token for a service account holding a custodian or
approver role waits for a second admin's confirmation; then its requester collects it."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from aiohttp import web

from shared import events
from shared.crypto import tokens
from shared.rpc import NotFound, ProblemError

from ..auth import Principal
from ..state import PRINCIPAL, Gateway, _json, _now, body_as
from . import rules, sessions
from . import schemas as S
from .common import account_store, acting_user, context, event_fields


def token_view(doc: dict[str, Any]) -> dict[str, Any]:
    view = {k: doc.get(k) for k in ("token_id", "name", "user_id", "kind", "scopes", "created_at", "expires_at",
                                    "revoked", "confirmed_by")}
    return {**view, "minted_by": doc.get("created_by")}


def request_view(req: dict[str, Any]) -> dict[str, Any]:
    return {**{k: req.get(k) for k in ("token_id", "name", "user_id", "scopes", "expires_in_seconds", "minted_by",
                                       "requested_at", "confirmed_by", "confirmed_at")},
            "kind": "service", "status": "confirmed" if req.get("confirmed_by") else "pending"}


def _mint(request: web.Request, principal: Principal, *, name: str, owner: str, kind: str, scopes: list[str] | None,
          expires_in_seconds: int, token_id: str | None = None,
          confirmed_by: str | None = None) -> tuple[str, dict[str, Any], events.TokenCreated]:
    """A new token (the secret, shown once), its stored document and its event; the caller mints it.
    SECURITY: the token is MFA-verified only if the credential minting it is."""
    token = tokens.new_token("sr_pat" if kind == "personal" else "sr_svc")
    now = _now()
    doc = {"token_id": token_id or events.new_id("tok_"), "name": name, "user_id": owner, "kind": kind,
           "scopes": scopes, "digest": tokens.digest(token), "created_by": principal.id,
           "confirmed_by": confirmed_by, "created_at": now, "expires_at": now + timedelta(seconds=expires_in_seconds),
           "revoked": False, "mfa": principal.mfa}
    event = events.TokenCreated(**event_fields(request, principal.tenant_id), token_id=doc["token_id"], name=name,
                                role=",".join(scopes or ["owner"]), user_id=owner, expires_at=doc["expires_at"],
                                minted_by=principal.id, confirmed_by=confirmed_by)
    return token, doc, event


async def _lifetime(gw: Gateway, tenant_id: str, requested: int | None) -> int:
    """The token's lifetime in seconds: as requested, at most the tenant's cap (the default)."""
    cap = sessions.token_max_days(await account_store(gw).tenant(tenant_id)) * 86400
    if requested is None:
        return cap
    if requested > cap:
        raise ProblemError(422, "Unprocessable Content",
                           f"expires_in_seconds: at most {cap} (the tenant's token lifetime cap)", "expires_in_seconds")
    return requested


async def create_token(request: web.Request) -> web.Response:
    """A personal API token for the caller, or (tenant admin) a service account's token; shown once.
    For a service account holding a custodian or approver role: a pending request (202)."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.CreateToken)
    if principal.kind not in ("user", "provider"):
        raise ProblemError(403, "Forbidden", "only people create tokens", "service_account_id")
    scopes = frozenset(body.scopes) if body.scopes is not None else None
    if principal.scopes is not None and (scopes is None or not scopes <= principal.scopes):
        # SECURITY: a scoped token never mints a broader one.
        raise ProblemError(403, "Forbidden", "a scoped token may only create tokens within its scopes", "scopes")
    body = body.model_copy(update={"expires_in_seconds": await _lifetime(gw, principal.tenant_id, body.expires_in_seconds)})
    owner, kind = principal.id, "personal"
    if body.service_account_id is not None:
        if not principal.may("tokens.manage"):
            raise ProblemError(403, "Forbidden", "requires permission tokens.manage", "service_account_id")
        target = await account_store(gw).active_service_account(principal.tenant_id, body.service_account_id)
        if target is None:
            raise NotFound("service account", "service_account_id")
        held = frozenset(target["roles"]) | {p["role"] for p in target.get("pending", [])}
        if rules.token_needs_second_admin(held):
            # SECURITY: one admin alone never holds a custodian's or approver's credential.
            return await _request_service_token(request, gw, principal, body, target)
        owner, kind = target["user_id"], "service"
    elif scopes is not None and not all(principal.may(s) for s in scopes):
        raise ProblemError(422, "Unprocessable Content", "scopes must be permissions you hold", "scopes")
    token, doc, event = _mint(request, principal, name=body.name, owner=owner, kind=kind,
                              scopes=sorted(scopes) if scopes is not None else None,
                              expires_in_seconds=body.expires_in_seconds)
    await account_store(gw).insert_token(principal.tenant_id, doc, event)
    return _json({**token_view(doc), "token": token}, 201)


async def _request_service_token(request: web.Request, gw: Gateway, principal: Principal, body: S.CreateToken,
                                 target: dict[str, Any]) -> web.Response:
    """Holds the token as a request on the service account until a second admin confirms it."""
    scopes = sorted(body.scopes) if body.scopes is not None else None
    req = {"token_id": events.new_id("tok_"), "name": body.name, "scopes": scopes,
           "expires_in_seconds": body.expires_in_seconds, "minted_by": principal.id, "requested_at": _now(),
           "confirmed_by": None, "confirmed_at": None}
    event = events.ServiceTokenRequested(
        **event_fields(request, principal.tenant_id), type="token.requested", token_id=req["token_id"], name=body.name,
        user_id=target["user_id"], scopes=tuple(scopes) if scopes is not None else None, minted_by=principal.id)
    if not await account_store(gw).save_token_requests(principal.tenant_id, target["user_id"], rev=target["rev"],
                                                       requests=[*target.get("token_requests", []), req], event=event):
        raise ProblemError(409, "Conflict", "the service account changed meanwhile; retry", "service_account_id")
    return _json(request_view({**req, "user_id": target["user_id"]}), 202)


async def _token_request(gw: Gateway, tenant_id: str, token_id: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The service account holding a token request, and the request."""
    found = next((r for r in await account_store(gw).token_requests(tenant_id) if r["token_id"] == token_id), None)
    account = await account_store(gw).active_service_account(tenant_id, found["user_id"]) if found else None
    req = next((r for r in (account or {}).get("token_requests", []) if r["token_id"] == token_id), None)
    if account is None or req is None:
        raise NotFound("token request", "token_id")
    return account, req


async def list_token_requests(request: web.Request) -> web.Response:
    gw, _ = context(request)
    requests = await account_store(gw).token_requests(request[PRINCIPAL].tenant_id)
    return _json({"items": [request_view(r) for r in requests]})


async def confirm_token_request(request: web.Request) -> web.Response:
    """A second admin confirms a service-account token request; the secret is not shown here."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    account, req = await _token_request(gw, principal.tenant_id, request.match_info["token_id"])
    if req["confirmed_by"] is not None:
        raise ProblemError(409, "Conflict", "this token request is already confirmed", "token_id")
    decision = rules.check_second_admin(
        confirmer=await acting_user(gw, principal) if principal.kind in ("user", "provider") else None,
        requested_by=req["minted_by"], requested_at=req["requested_at"], what="requested a service-account token")
    if not decision.allowed:
        raise ProblemError(403, "Forbidden", decision.reason, "token_id")
    confirmed = {**req, "confirmed_by": principal.id, "confirmed_at": _now()}
    event = events.ServiceTokenRequested(
        **event_fields(request, principal.tenant_id), type="token.confirmed", token_id=req["token_id"],
        name=req["name"], user_id=account["user_id"], scopes=tuple(req["scopes"]) if req["scopes"] is not None else None,
        minted_by=req["minted_by"], confirmed_by=principal.id)
    requests = [confirmed if r["token_id"] == req["token_id"] else r for r in account["token_requests"]]
    if not await account_store(gw).save_token_requests(principal.tenant_id, account["user_id"], rev=account["rev"],
                                                       requests=requests, event=event):
        raise ProblemError(409, "Conflict", "the service account changed meanwhile; retry", "token_id")
    return _json(request_view({**confirmed, "user_id": account["user_id"]}))


async def collect_token_request(request: web.Request) -> web.Response:
    """The requesting admin, and only they, collects a confirmed token: it is created now, shown once."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    account, req = await _token_request(gw, principal.tenant_id, request.match_info["token_id"])
    if req["minted_by"] != principal.id:
        raise ProblemError(403, "Forbidden", "only the admin who requested a token collects it", "token_id")
    if req["confirmed_by"] is None:
        raise ProblemError(409, "Conflict", "a second admin has not confirmed this token yet", "token_id")
    token, doc, event = _mint(request, principal, name=req["name"], owner=account["user_id"], kind="service",
                              scopes=req["scopes"],
                              expires_in_seconds=await _lifetime(gw, principal.tenant_id, req["expires_in_seconds"]),
                              token_id=req["token_id"], confirmed_by=req["confirmed_by"])
    rest = [r for r in account["token_requests"] if r["token_id"] != req["token_id"]]
    if not await account_store(gw).collect_token_request(principal.tenant_id, account["user_id"], rev=account["rev"],
                                                         requests=rest, token=doc, event=event):
        raise ProblemError(409, "Conflict", "the service account changed meanwhile; retry", "token_id")
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
