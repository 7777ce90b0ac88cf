"""Audit: a search over the tenant's records with the filters the API takes (action, actor, outcome,
resource, device, key, since/until), the chain's state (head, last signed checkpoint, ingestion lag) and its verification
and export links, one per format, whose console route streams through the API's own export view.
The search and the state go to auditsvc exactly as `GET /v1/audit` and `GET /v1/audit/status` do."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from aiohttp import web

from shared import export_formats
from shared.rpc import ProblemError

from .. import views_audit
from ..state import _call
from .audit_verify import check_chain
from .names import user_name
from .web import render

FILTERS = ("action", "actor", "outcome", "resource", "device", "key", "since", "until")
PAGE = 50


def search_params(query: dict[str, str]) -> dict[str, str]:
    """The filled-in filters of a search form (empty fields dropped, lengths bounded by auditsvc)."""
    return {name: query[name].strip() for name in FILTERS if query.get(name, "").strip()}


def export_links(filters: dict[str, str]) -> list[dict[str, str]]:
    """The export URL for the same filters, once per format."""
    return [{"name": name, "href": "/console/audit/export?" + urlencode({**filters, "format": name})}
            for name in export_formats.NAMES]


async def _actor_name(request: web.Request, actor: dict[str, Any]) -> str:
    """A person's username for a user actor; any other actor (device, service) by its id."""
    actor_id = str(actor.get("id", ""))
    return await user_name(request, actor_id) if actor.get("kind") == "user" and actor_id else actor_id


async def search(request: web.Request) -> web.StreamResponse:
    filters = search_params(dict(request.query))
    records: list[dict[str, Any]] = []
    error = None
    try:
        page = await _call(request, "auditsvc", "list_records", {**filters, "limit": str(PAGE)})
        records = [{**r, "actor_name": await _actor_name(request, r.get("actor") or {})} for r in page["items"]]
    except ProblemError as exc:
        error = f"{exc.problem.field or 'filter'}: {exc.problem.detail or exc.problem.title}"
    status = await _call(request, "auditsvc", "status")
    return render("audit.html", request, {"filters": filters, "fields": FILTERS, "records": records, "error": error,
                                          "status": status, "exports": export_links(filters),
                                          "check": await check_chain(request)},
                  status=400 if error else 200)


async def export(request: web.Request) -> web.StreamResponse:
    """The API's export view itself (same checks, same streaming), reached with the console session."""
    try:
        return await views_audit.export(request)
    except ProblemError as exc:  # refused before anything was sent
        return render("problem.html", request, {"error": f"{exc.problem.field or 'export'}: {exc.problem.detail}"},
                      status=exc.problem.status)
