"""Step-up for a console change that matters (a vote, a role confirmation): the signed-in person's
current TOTP code, checked and spent by `accounts.common.fresh_totp` exactly as at sign-in, so a
browser left open cannot make the change with the session alone."""

from __future__ import annotations

from aiohttp import web

from ..accounts.common import account_store, fresh_totp
from ..state import GATEWAY, PRINCIPAL


async def step_up(request: web.Request, code: str, method: str, what: str) -> str | None:
    """None when `code` is a fresh TOTP code of the signed-in person; else why not, for the page.
    `method` names a wrong code in the audit trail; `what` is the change, for the message."""
    principal = request[PRINCIPAL]
    user = await account_store(request.app[GATEWAY]).user(principal.tenant_id, principal.id)
    if user is None or not (user.get("mfa") or {}).get("confirmed"):
        return f"{what} needs a TOTP authenticator enrolled."
    if not await fresh_totp(request, {**user, "tenant_id": principal.tenant_id}, code.strip(), method):
        return "That code is wrong or was already used; enter the current one."
    return None
