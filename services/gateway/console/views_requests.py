"""Request detail: the decision policysvc recorded for a key request (the RPC the API's
`/v1/decisions/{request_id}` reads), shown with every rule evaluated, each condition's fact,
operator, expected and actual value, provenance and result, what the agent was told, and the
approval (votes and comments) when one was needed."""

from __future__ import annotations

import re

from aiohttp import web

from shared.provenance import lookup
from shared.rpc import ProblemError

from ..state import _call
from .names import device_name, user_name
from .present import fact_rows
from .web import render

_REQUEST_ID = re.compile(r"^[A-Za-z0-9_-]{1,100}$")


async def detail(request: web.Request) -> web.StreamResponse:
    request_id = request.match_info["request_id"]
    if not _REQUEST_ID.match(request_id):
        return render("request.html", request, {"decision": None, "error": "No such request."}, status=404)
    try:
        decision = await _call(request, "policysvc", "get_decision", {"request_id": request_id})
    except ProblemError as exc:
        return render("request.html", request, {"decision": None, "error": exc.problem.detail or exc.problem.title},
                      status=exc.problem.status)
    provenance = decision.get("provenance") or {}
    for rule in decision.get("trace") or []:
        for condition in rule.get("conditions") or []:
            # A condition names its provenance when it recorded one; else the decision's map, else claimed.
            condition["provenance"] = condition.get("provenance") or lookup(provenance, (condition.get("fact", ""),))
    approval = decision.get("approval")
    if approval:
        approval["voters"] = [{**v, "name": await user_name(request, v["by"])} for v in approval.get("votes", [])]
    return render("request.html", request, {
        "decision": decision, "error": None, "device_name": await device_name(request, decision["device_id"]),
        "facts": fact_rows(decision.get("facts") or {}, provenance),
    })

