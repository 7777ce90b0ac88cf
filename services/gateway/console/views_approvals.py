"""The approvals inbox: pending approvals with who asks for which key, the policy rule that asked,
m-of-n progress and time left; a vote (approve or deny, with a comment) re-checks the voter's TOTP
code (step-up) and goes to policysvc exactly as the API's vote does. Every open inbox follows the
tenant's approval events and is re-rendered for its own viewer when one arrives."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from pydantic import ValidationError

from shared import events
from shared.rpc import ProblemError

from .. import views_policy
from ..state import PRINCIPAL, _call
from . import live
from .names import device_name, user_name
from .present import remaining
from .step_up import step_up
from .web import render

STEP_UP_METHOD = "step_up_vote"  # how a wrong step-up code is named in the audit trail


async def _inbox(request: web.Request) -> list[dict[str, Any]]:
    """The pending approvals as the policysvc RPC lists them, with names and time left."""
    listed = await _call(request, "policysvc", "list_approvals", {"status": "pending", "limit": None})
    now = datetime.now(UTC)
    items = []
    for item in listed["items"]:
        items.append({
            **item,
            "device_name": await device_name(request, item["device_id"]),
            "voters": [{**vote, "name": await user_name(request, vote["by"])} for vote in item.get("votes", [])],
            "remaining": remaining(item["expires_at"], now),
            "mine": any(vote["by"] == request[PRINCIPAL].id for vote in item.get("votes", [])),
        })
    return items


async def _fragment(request: web.Request, *, flash: str | None = None, error: str | None = None,
                    status: int = 200) -> web.Response:
    """The inbox list; after a vote also the outcome, swapped out of band into the notice above it
    (so the next live re-render of the list leaves it in place)."""
    template = "approvals_list.html" if flash is None and error is None else "approvals_vote.html"
    return render(template, request, {"approvals": await _inbox(request), "flash": flash, "error": error}, status=status)


async def inbox(request: web.Request) -> web.StreamResponse:
    return render("approvals.html", request, {
        "approvals": await _inbox(request), "flash": None, "error": None})


async def inbox_live(request: web.Request) -> web.StreamResponse:
    """SSE: the inbox as it stands (also after a reconnect), then re-rendered for this viewer on
    every approval event of the tenant."""

    async def current() -> str:
        return (await _fragment(request)).text or ""

    async def rerender(event: events.Event) -> str | None:
        return await current()

    return await live.stream(request, ("approval.*",), rerender, initial=current)


async def vote(request: web.Request) -> web.StreamResponse:
    """Approve or deny with a comment; the voter's current TOTP code is checked first (step-up)."""
    approval_id = request.match_info["approval_id"]
    form = await request.post()
    verdict = form.get("verdict")
    if verdict not in ("approve", "deny"):
        return await _fragment(request, error="Choose approve or deny.", status=422)
    try:
        body = views_policy.VoteBody(comment=str(form.get("comment", "")))
    except ValidationError:
        return await _fragment(request, error="The comment is too long (1000 characters at most).", status=422)
    # SECURITY: step-up: a vote needs a fresh code, not only a session (a left-open browser cannot vote).
    refused = await step_up(request, str(form.get("totp", "")), STEP_UP_METHOD, "Voting")
    if refused is not None:
        return await _fragment(request, error=refused, status=403)
    try:
        result = await views_policy.vote(request, approval_id, str(verdict), body.comment)
    except ProblemError as exc:
        return await _fragment(request, error=exc.problem.detail or exc.problem.title, status=exc.problem.status)
    done = "approved" if verdict == "approve" else "denied"
    return await _fragment(request, flash=f"You {done} the request for {result['key_id']}: now {result['status']} "
                                          f"({result['approvals_received']} of {result['approvals_required']}).")
