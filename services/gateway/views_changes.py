"""Co-signing views: the guard's hook for a small-team user's change (ask, or run a confirmed one),
the list of changes waiting for a second person, and that person's confirmation."""

from __future__ import annotations

from aiohttp import web

from shared import events
from shared.rpc import NotFound, ProblemError

from . import changes
from .accounts.common import event_fields
from .auth import Principal
from .problems import ExtraProblem
from .state import GATEWAY, PRINCIPAL, _json, _now


async def cosigned(request: web.Request, principal: Principal, permission: str) -> Principal:
    """Small-team mode: a user holding conflicting roles acts only with a second person. Without
    `X-Strongroom-Change` the request is recorded as a pending change (428 with its id); with the
    id of a change a second person confirmed for exactly this request, it runs, once."""
    gw = request.app[GATEWAY]
    digest = changes.body_sha256(await request.read())
    method, path, now = request.method, request.path_qs, _now()
    header = request.headers.get(changes.CHANGE_HEADER)
    if header is None:
        change = changes.new_change(requested_by=principal.id, method=method, path=path, digest=digest,
                                    permission=permission, now=now, ttl_seconds=gw.settings.change_ttl_seconds)
        event = events.ChangeCosign(**event_fields(request, principal.tenant_id, principal.actor),
                                    **{k: change[k] for k in ("change_id", "method", "path", "permission",
                                                              "requested_by")}, body_sha256=digest)
        await gw.store.changes.insert_change(principal.tenant_id, change, event)
        raise ExtraProblem(
            428, "Precondition Required",
            f"a second person must confirm this change: they sign in and confirm it (strongroom changes confirm "
            f"{change['change_id']}); then repeat this request with {changes.CHANGE_HEADER}: {change['change_id']}",
            field=changes.CHANGE_HEADER, change_id=change["change_id"], body_sha256=digest,
            expires_at=change["expires_at"].isoformat())
    change_id = header.strip()
    if not changes.CHANGE_ID.match(change_id):
        raise ProblemError(400, "Bad Request", f"{changes.CHANGE_HEADER}: a change id (chg_...)", changes.CHANGE_HEADER)
    used = await gw.store.changes.use_change(principal.tenant_id, change_id, requested_by=principal.id, method=method,
                                             path=path, body_sha256=digest, at=now)
    if used is None:
        status, reason = changes.why_unusable(await gw.store.changes.change(principal.tenant_id, change_id),
                                              requester=principal.id, method=method, path=path, digest=digest, now=now)
        raise ProblemError(status, "Not Found" if status == 404 else "Conflict", reason, changes.CHANGE_HEADER)
    return Principal(principal.kind, principal.id, principal.tenant_id, principal.roles,
                     f"{principal.auth}+cosigned:{used['confirmed_by']}", credential_id=principal.credential_id,
                     scopes=principal.scopes, second_person=True, mfa=principal.mfa)


async def list_changes(request: web.Request) -> web.Response:
    """Changes waiting for a second person that the caller may confirm, and the caller's own."""
    gw = request.app[GATEWAY]
    principal: Principal = request[PRINCIPAL]
    pending = await gw.store.changes.pending_changes(principal.tenant_id, _now())
    return _json({"items": [changes.view(c) for c in pending
                            if c["requested_by"] == principal.id or principal.may(c["permission"])]})


async def confirm_change(request: web.Request) -> web.Response:
    """A second person, signed in, confirms one pending change; the requester then repeats it."""
    gw = request.app[GATEWAY]
    principal: Principal = request[PRINCIPAL]
    change = await gw.store.changes.change(principal.tenant_id, request.match_info["change_id"])
    if change is None:
        raise NotFound("change", "change_id")
    now = _now()
    decision = changes.check_confirmation(
        change, confirmer_id=principal.id, may=principal.kind in ("user", "provider") and principal.may(change["permission"]),
        signed_in=bool(principal.credential_id and principal.credential_id.startswith("ses_")), now=now)
    if not decision.allowed:
        raise ProblemError(403, "Forbidden", decision.reason, "change_id")
    event = events.ChangeCosign(**event_fields(request, principal.tenant_id), type="change.confirmed",
                                **{k: change[k] for k in ("change_id", "method", "path", "body_sha256", "permission",
                                                          "requested_by")}, confirmed_by=principal.id)
    if not await gw.store.changes.confirm_change(principal.tenant_id, change["change_id"], confirmed_by=principal.id,
                                                 at=now, event=event):
        raise ProblemError(409, "Conflict", "this change is no longer waiting for confirmation", "change_id")
    return _json(changes.view({**change, "status": "confirmed", "confirmed_by": principal.id, "confirmed_at": now}))
