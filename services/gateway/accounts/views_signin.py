"""Sign-in: first password, login (password, then TOTP or a recovery code), logout, who am I,
MFA enrolment and password change. Failed sign-ins answer the same for every cause (wrong
password, unknown user, missing or wrong second factor); the cause is audited and counts
toward the lockout per (username, source address) and per username."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from shared import events
from shared.crypto import tokens
from shared.rpc import ProblemError

from ..auth import Principal, RateLimited, Unauthorized
from ..guard import throttle
from ..ratelimit import retry_after
from ..state import PRINCIPAL, Gateway, _json, _now, body_as
from . import mfa, passwords, rules
from . import schemas as S
from .common import (
    ACCOUNTS,
    Accounts,
    account_store,
    check_password,
    context,
    event_fields,
    fresh_totp,
    sign_in_failed,
    source_address,
    start_session,
    user_or_404,
    user_view,
)
from .invitations import sso_only


async def setup_password(request: web.Request) -> web.Response:
    """An invited user sets their first password with the one-time setup token."""
    gw, acc = context(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    body = await body_as(request, S.Setup)
    digest = tokens.digest(body.setup_token)
    doc = await account_store(gw).user_by_setup_digest(digest)
    if doc is None or doc["setup_expires_at"] <= _now() or doc.get("status") != "active":
        raise Unauthorized("unknown or expired setup token")
    if await sso_only(gw, doc["tenant_id"]):  # people sign in only through the tenant's identity provider
        raise Unauthorized("setup tokens are void in an SSO-only tenant")
    check_password(body.password, doc["username"])
    encoded = await acc.hash(body.password)
    event = events.UserPasswordSet(**event_fields(request, doc["tenant_id"], events.Actor(
        kind="user", id=doc["user_id"], auth="setup_token")), user_id=doc["user_id"])
    if not await account_store(gw).set_first_password(doc["tenant_id"], doc["user_id"], digest, encoded, event):
        raise Unauthorized("setup token already used")
    return _json({"tenant_id": doc["tenant_id"], "user_id": doc["user_id"], "username": doc["username"]})


AMBIGUOUS_TENANT = "more than one tenant bears this name: sign in with the tenant's id (your admin has it)"


async def sign_in_tenant(gw: Gateway, tenant: str | None) -> str | None:
    """The tenant a sign-in names (API, CLI and console): its id, or a name only one tenant bears;
    without one, an enterprise deployment's tenant. An unknown name is None (answered like a wrong
    password); a name two tenants bear is refused, naming the field, rather than guessed (names
    are not unique: this says only that the name is shared, never which tenants share it)."""
    if tenant:
        found = await account_store(gw).sign_in_tenants(tenant)
        if len(found) > 1:
            raise ProblemError(422, "Unprocessable Content", f"tenant: {AMBIGUOUS_TENANT}", "tenant")
        return found[0] if found else None
    if gw.settings.deployment == "enterprise":
        return await account_store(gw).bootstrap_tenant()
    raise ProblemError(422, "Unprocessable Content", "tenant: required in provider deployments", "tenant")


async def _refuse_if_locked(request: web.Request, gw: Gateway, tenant_id: str, username: str) -> None:
    """429 while this (name, address) pair, or the name across all addresses, is locked."""
    now = _now()
    counters = await account_store(gw).sign_in_counters(tenant_id, username, source_address(request), now)
    wait = retry_after(counters, now)
    if wait is not None:
        # Unknown usernames lock exactly like real ones, so this reveals nothing about who exists.
        await sign_in_failed(request, gw, tenant_id, username, None, "password", "locked out", count=False)
        raise RateLimited(wait, "too many failed sign-ins; retry later")


async def login(request: web.Request) -> web.Response:
    """Password (and TOTP or a recovery code where the user's roles require MFA) -> a session."""
    return _json(await sign_in(request, await body_as(request, S.Login)), 201)


async def sign_in(request: web.Request, body: S.Login) -> dict[str, Any]:
    """A started session (its token and who it is for) from sign-in details, or Unauthorized (audited
    and counted toward lockout). The API's login and the console's sign-in both end here."""
    gw, acc = context(request)
    throttle(acc.login_by_address, f"ip:{request.remote}")
    if len(body.password) > passwords.MAX_LENGTH:
        raise ProblemError(422, "Unprocessable Content", f"password must be at most {passwords.MAX_LENGTH} characters",
                           "password")
    tenant_id = await sign_in_tenant(gw, body.tenant)
    username = body.username.lower()
    method = "password"
    tenant = await account_store(gw).tenant(tenant_id) if tenant_id else None
    if tenant is None or tenant.get("status") != "active":
        await acc.verify(None, body.password)  # same cost as a real attempt
        raise Unauthorized("unknown or inactive tenant")
    await _refuse_if_locked(request, gw, tenant_id, username)
    user = await account_store(gw).user_by_username(tenant_id, username)
    usable = user is not None and user.get("status") == "active" and user.get("account") == "person"
    # SECURITY: the password is always verified (a decoy hash for unknown users), and every
    # failure below raises the same Unauthorized: a good password without its second factor
    # answers exactly like a wrong one, so the answer is no password oracle.
    ok = await acc.verify(user.get("password_hash") if usable else None, body.password)
    if not ok:
        await sign_in_failed(request, gw, tenant_id, username, user if usable else None, method,
                      "bad password" if usable else "unknown user")
        raise Unauthorized("bad password")
    assert user is not None
    roles = frozenset(user["roles"]) | {p["role"] for p in user.get("pending", [])}
    enrolled = bool((user.get("mfa") or {}).get("confirmed"))
    mfa_done = False
    if enrolled:
        mfa_done, method = await _second_factor(request, gw, user, body)
    await _rehash_if_needed(gw, acc, user, body.password)
    session = await start_session(request, gw, user, method=method, mfa=mfa_done)
    await account_store(gw).clear_failed_sign_ins(tenant_id, username, source_address(request), _now())
    return {**session, "mfa_enrolment_required": rules.needs_mfa(roles) and not enrolled}


async def _rehash_if_needed(gw: Gateway, acc: Accounts, user: dict[str, Any], password: str) -> None:
    """Raised Argon2 parameters reach an existing user at their next good password."""
    if acc.hasher.needs_rehash(user["password_hash"]):
        encoded = await acc.hash(password)
        await account_store(gw).rehash_password(user["tenant_id"], user["user_id"], old=user["password_hash"], new=encoded)


async def _second_factor(request: web.Request, gw: Gateway, user: dict, body: S.Login) -> tuple[bool, str]:
    tenant_id, username = user["tenant_id"], user["username"]
    if body.totp:
        method = "password+totp"
        if await fresh_totp(request, user, body.totp, method):
            return True, method
        raise Unauthorized("bad totp")
    if body.recovery_code:
        method = "password+recovery_code"
        digest = mfa.recovery_digest(body.recovery_code)
        if digest in user.get("recovery", []):
            event = events.UserRecoveryCodeUsed(
                **event_fields(request, tenant_id, events.Actor(kind="user", id=user["user_id"], auth=method)),
                user_id=user["user_id"], remaining=len(user["recovery"]) - 1)
            if await account_store(gw).use_recovery_code(tenant_id, user["user_id"], digest, event):
                return True, method
        await sign_in_failed(request, gw, tenant_id, username, user, method, "bad or used recovery code")
        raise Unauthorized("bad recovery code")
    await sign_in_failed(request, gw, tenant_id, username, user, "password", "second factor missing")
    raise Unauthorized("second factor missing")


async def logout(request: web.Request) -> web.Response:
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    if principal.credential_id and principal.credential_id.startswith("ses_"):
        event = events.UserLoggedOut(**event_fields(request, principal.tenant_id), user_id=principal.id,
                                     session_id=principal.credential_id)
        await account_store(gw).end_session(principal.tenant_id, principal.credential_id, _now(), event)
        gw.operators.forget_session(principal.credential_id)
    return web.Response(status=204)


async def me(request: web.Request) -> web.Response:
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    if principal.kind == "bootstrap":
        return _json({"kind": "bootstrap", "roles": sorted(principal.roles)})
    doc = await user_or_404(gw, principal.tenant_id, principal.id)
    return _json({**user_view(doc), "tenant_id": principal.tenant_id, "auth": principal.auth,
                  "effective_roles": sorted(principal.roles - {rules.MEMBER}),
                  "scopes": sorted(principal.scopes) if principal.scopes is not None else None})


async def mfa_begin(request: web.Request) -> web.Response:
    """Start TOTP enrolment: a new secret as an otpauth:// URI (no QR image; paste or render it)."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    doc = await user_or_404(gw, principal.tenant_id, principal.id)
    if (doc.get("mfa") or {}).get("confirmed"):
        raise ProblemError(409, "Conflict", "MFA is already enrolled", "mfa")
    secret = mfa.new_secret()
    sealed = request.app[ACCOUNTS].seal_totp(secret, tenant_id=principal.tenant_id, user_id=principal.id)
    await account_store(gw).begin_mfa(principal.tenant_id, principal.id, sealed)
    gw.operators.forget_user(principal.tenant_id, principal.id)
    return _json({"secret": secret, "otpauth_uri": mfa.provisioning_uri(secret, account=doc["username"])}, 201)


async def mfa_confirm(request: web.Request) -> web.Response:
    """Finish enrolment with a current code; returns single-use recovery codes (shown once) and
    upgrades the calling session to MFA-verified."""
    gw, _ = context(request)
    principal: Principal = request[PRINCIPAL]
    body = await body_as(request, S.MfaCode)
    doc = await user_or_404(gw, principal.tenant_id, principal.id)
    state = doc.get("mfa") or {}
    if not state.get("secret") or state.get("confirmed"):
        raise ProblemError(409, "Conflict", "no MFA enrolment in progress", "mfa")
    secret = request.app[ACCOUNTS].open_totp(state["secret"], tenant_id=principal.tenant_id, user_id=principal.id)
    step = mfa.matching_step(secret, body.code, _now(), last_step=None)
    if step is None:
        raise ProblemError(422, "Unprocessable Content", "the code does not match", "code")
    codes = mfa.new_recovery_codes()
    event = events.UserMfaEnrolled(**event_fields(request, principal.tenant_id), user_id=principal.id)
    if not await account_store(gw).confirm_mfa(principal.tenant_id, principal.id, sealed_secret=state["secret"], step=step,
                                        recovery=[mfa.recovery_digest(c) for c in codes], event=event):
        raise ProblemError(409, "Conflict", "the enrolment changed meanwhile; start again", "mfa")
    gw.operators.forget_user(principal.tenant_id, principal.id)
    if principal.credential_id and principal.credential_id.startswith("ses_"):
        await account_store(gw).upgrade_session_mfa(principal.tenant_id, principal.credential_id, f"{principal.auth}+totp")
        gw.operators.forget_session(principal.credential_id)
    return _json({"recovery_codes": codes})


async def change_password(request: web.Request) -> web.Response:
    """The signed-in user changes their password: the current one and, once enrolled, a fresh
    TOTP code. Every session of theirs ends (sign in again); failures count toward lockout."""
    gw, acc = context(request)
    principal: Principal = request[PRINCIPAL]
    throttle(acc.login_by_address, f"ip:{request.remote}")
    body = await body_as(request, S.ChangePassword)
    if principal.kind not in ("user", "provider"):
        raise ProblemError(403, "Forbidden", "only people have passwords", "current_password")
    doc = await user_or_404(gw, principal.tenant_id, principal.id)
    if not doc.get("password_hash"):
        raise ProblemError(409, "Conflict", "this account signs in through single sign-on", "current_password")
    check_password(body.new_password, doc["username"])
    doc["tenant_id"] = principal.tenant_id
    method = "password_change"
    if not await acc.verify(doc["password_hash"], body.current_password):
        await sign_in_failed(request, gw, principal.tenant_id, doc["username"], doc, method, "bad current password")
        raise ProblemError(403, "Forbidden", "the current password or code is wrong", "current_password")
    if (doc.get("mfa") or {}).get("confirmed") and not await fresh_totp(request, doc, body.totp or "", method):
        raise ProblemError(403, "Forbidden", "the current password or code is wrong", "totp")
    encoded = await acc.hash(body.new_password)
    event = events.UserPasswordSet(**event_fields(request, principal.tenant_id), user_id=doc["user_id"])
    await account_store(gw).set_password(principal.tenant_id, doc["user_id"], encoded, _now(), event)
    gw.operators.forget_user(principal.tenant_id, doc["user_id"])
    return web.Response(status=204)
