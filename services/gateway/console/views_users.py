"""Users and roles: every user of the tenant with the roles in effect, and the grants waiting for a
second admin, each with a Confirm button (and the confirming admin's current TOTP code). Listing
and confirming call the API's own functions (`views_users.users`, `views_users.confirm_grant`), so
the second-admin rules apply unchanged."""

from __future__ import annotations

import urllib.parse
from typing import Any

from aiohttp import web

from shared.rpc import ProblemError

from ..accounts import views_users
from .step_up import step_up
from .web import render, see_other

STEP_UP_METHOD = "step_up_confirm_role"  # how a wrong step-up code is named in the audit trail


def pending_grants(users: list[dict[str, Any]]) -> list[dict[str, str]]:
    """Every grant waiting for a second admin, with whom it is for and who granted it."""
    names = {u["user_id"]: u["username"] for u in users}
    return [{"user_id": u["user_id"], "username": u["username"], "role": p["role"], "granted_by": p["granted_by"],
             "granted_by_name": names.get(p["granted_by"], p["granted_by"])}
            for u in users for p in u["pending_roles"]]


async def _page(request: web.Request, *, error: str, status: int) -> web.Response:
    """The page again with the refusal (a refused change changed nothing, so it is not redirected)."""
    users = await views_users.users(request)
    return render("users.html", request, {"users": users, "pending": pending_grants(users), "flash": None,
                                          "error": error}, status=status)


def confirmed_flash(users: list[dict[str, Any]], user_id: str, role: str) -> str | None:
    """The page's note after a confirmation (Post/Redirect/Get): said only while it is true, the
    role in effect for that user, so a crafted link cannot make the page claim one."""
    user = next((u for u in users if u["user_id"] == user_id), None)
    if user is None or role not in user.get("roles", ()):
        return None
    return f"{role} is now in effect for {user['username']}."


async def users(request: web.Request) -> web.StreamResponse:
    users = await views_users.users(request)
    flash = confirmed_flash(users, request.query.get("user", ""), request.query.get("confirmed", ""))
    return render("users.html", request, {"users": users, "pending": pending_grants(users), "flash": flash,
                                          "error": None})


async def confirm(request: web.Request) -> web.StreamResponse:
    """Confirm a pending grant as the second admin, with a fresh TOTP code (step-up, as a vote);
    refused with the API's reason when the second-admin rules say no."""
    user_id, role = request.match_info["user_id"], request.match_info["role"]
    form = await request.post()
    # SECURITY: step-up: a left-open browser cannot hand out a privileged role.
    refused = await step_up(request, str(form.get("totp", "")), STEP_UP_METHOD, "Confirming a role")
    if refused is not None:
        return await _page(request, error=refused, status=403)
    try:
        await views_users.confirm_grant(request, user_id, role)
    except ProblemError as exc:
        return await _page(request, error=exc.problem.detail or exc.problem.title, status=exc.problem.status)
    # Post/Redirect/Get: a reload shows the outcome again without confirming anything twice.
    return see_other("/console/users?" + urllib.parse.urlencode({"confirmed": role, "user": user_id}))
