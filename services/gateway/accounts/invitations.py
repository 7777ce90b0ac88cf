"""Invitations and admin notices by e-mail. A person's setup token is created here, its digest
stored, and the token itself mailed to the person's own address: never returned to the admin who
created them, never logged. Under a tenant's "SSO only" setting no setup token is ever created:
people come into being at their first single sign-on.
Every active admin of the tenant hears of every new admin and every role grant."""

from __future__ import annotations

import asyncio
from datetime import datetime, timedelta
from typing import Any

import structlog
from aiohttp import web

from shared import events
from shared.rpc import ProblemError
from shared.service import stop_if_cancelled

from ..auth import Principal
from ..mail import Mail, MailNotSent
from ..state import PRINCIPAL, Gateway, _json, _now
from . import rules
from .common import Accounts, account_store, context, new_setup_token, user_or_404, user_view

log = structlog.get_logger("strongroom.gateway.accounts")

SENT, UNDELIVERED, SENDING = "sent", "undelivered", "sending"


def tenant_mail_rules(tenant: dict[str, Any] | None) -> tuple[bool, list[str]]:
    """(SSO only, allowed e-mail domains) of a tenant's settings."""
    settings = (tenant or {}).get("settings", {})
    return bool(settings.get("sso_only")), list(settings.get("allowed_email_domains") or [])


async def sso_only(gw: Gateway, tenant_id: str) -> bool:
    return tenant_mail_rules(await account_store(gw).tenant(tenant_id))[0]


def check_invitee(tenant: dict[str, Any] | None, *, email: str | None, account: str) -> None:
    """A 422 naming `email` unless the address suits the account and the tenant."""
    _, domains = tenant_mail_rules(tenant)
    decision = rules.check_email(email, account=account, allowed_domains=domains)
    if not decision.allowed:
        raise ProblemError(422, "Unprocessable Content", decision.reason, "email")


def setup_fields(gw: Gateway) -> tuple[str, dict[str, Any]]:
    """A new setup token and the fields to store: its digest and expiry, never the token."""
    token, setup = new_setup_token(gw)
    return token, {**setup, "invitation": SENDING}


def _invitation(gw: Gateway, user: dict[str, Any], tenant_name: str, token: str) -> Mail:
    url = gw.settings.public_url or f"http://{gw.settings.host}:{gw.settings.port}"
    expires: datetime = user["setup_expires_at"]
    body = (f"You have been invited to the Strongroom tenant \"{tenant_name}\" as \"{user['username']}\".\n\n"
            f"Your one-time setup token (valid until {expires.isoformat(timespec='seconds')}):\n\n"
            f"    {token}\n\n"
            f"Set your password with it at {url}:\n"
            f"    strongroom account setup <setup token> --password-stdin\n\n"
            "Nobody else has this token; if you did not expect it, tell your administrator.\n")
    return Mail(to=user["email"], subject=f"Strongroom: your invitation to {tenant_name}", body=body)


async def deliver(gw: Gateway, acc: Accounts, tenant_id: str, user: dict[str, Any], token: str,
                  *, tenant_name: str) -> str:
    """Mails a stored user's invitation; records (and returns) `sent` or `undelivered`. An
    undelivered invitation loses nothing: an admin re-sends it (a new token; the old one void)."""
    try:
        await acc.mailer.send(_invitation(gw, user, tenant_name, token))
    except MailNotSent:
        state = UNDELIVERED
    else:
        state = SENT
    await account_store(gw).set_invitation(tenant_id, user["user_id"], state)
    user["invitation"] = state
    return state


async def notify_admins(gw: Gateway, acc: Accounts, tenant_id: str, subject: str, lines: list[str]) -> None:
    """Tells every active admin of the tenant (at their address) of a new admin or a role grant.
    A notice the mail server does not take is kept in the store and tried again."""
    admins = [u for u in await account_store(gw).active_users(tenant_id) if rules.is_active_admin(u) and u.get("email")]
    body = "\n".join(lines) + "\n\nEvery admin of the tenant receives this notice. If it is unexpected, act now.\n"
    for admin in admins:
        mail = Mail(to=admin["email"], subject=f"Strongroom: {subject}", body=body)
        try:
            await acc.mailer.send(mail)
        except MailNotSent:
            # Kept and tried again (`retry_notices`): a notice carries no secret, unlike an invitation.
            now = _now()
            await account_store(gw).queue_mail(tenant_id, {
                "mail_id": events.new_id("mail_"), "to": mail.to, "subject": mail.subject, "body": mail.body,
                "created_at": now, "next_at": now + timedelta(seconds=gw.settings.mail_retry_seconds), "attempts": 0})


async def retry_notices(gw: Gateway, acc: Accounts) -> None:
    """Sends the admin notices the mail server did not take, each claimed by one instance at a time;
    runs for the gateway's lifetime."""
    wait = gw.settings.mail_retry_seconds
    while True:
        await asyncio.sleep(wait)
        try:
            while (doc := await account_store(gw).claim_mail(_now(), _now() + timedelta(seconds=wait))) is not None:
                try:
                    await acc.mailer.send(Mail(to=doc["to"], subject=doc["subject"], body=doc["body"]))
                except MailNotSent:
                    break  # the mail server still refuses: the claim's expiry is the next attempt
                await account_store(gw).drop_mail(doc["tenant_id"], doc["mail_id"])
        except Exception:
            stop_if_cancelled()
            log.exception("notice_retry_failed")


async def resend_invitation(request: web.Request) -> web.Response:
    """Tenant admin: a new invitation for a person who has not set up yet; the old token stops
    working. The token goes to the person's address, never into this answer."""
    gw, acc = context(request)
    principal: Principal = request[PRINCIPAL]
    doc = await user_or_404(gw, principal.tenant_id, request.match_info["user_id"])
    tenant = await account_store(gw).tenant(principal.tenant_id)
    if doc.get("account", "person") != "person" or doc.get("status") != "active" or doc.get("password_hash") \
            or doc.get("source") != "local" or not doc.get("email"):
        raise ProblemError(409, "Conflict", "only an active person who has not set up yet gets an invitation",
                           "user_id")
    if tenant_mail_rules(tenant)[0]:
        raise ProblemError(409, "Conflict", "this tenant signs people in only through its identity provider", "user_id")
    token, setup = setup_fields(gw)
    await account_store(gw).set_invitation(principal.tenant_id, doc["user_id"], setup.pop("invitation"), setup)
    user = {**doc, **setup}
    await deliver(gw, acc, principal.tenant_id, user, token, tenant_name=(tenant or {}).get("name", ""))
    return _json(user_view(user))
