"""The live stream: a filterable tail of the tenant's decisions, releases, approvals and device
alerts as they happen (the notifier the API's event stream reads), newest first. Filters are the
page's query (`?kind=releases&kind=approvals&q=<key, device or request id>`)."""

from __future__ import annotations

import json

import aiohttp_jinja2
from aiohttp import web

from shared import events

from . import live
from .present import STREAM_KINDS, matches, parse_time, stream_patterns, summary
from .web import render


def _filters(request: web.Request) -> tuple[list[str], str]:
    kinds = [k for k in request.query.getall("kind", []) if any(k == s.name for s in STREAM_KINDS)]
    return kinds, request.query.get("q", "")[:100]


async def page(request: web.Request) -> web.StreamResponse:
    kinds, text = _filters(request)
    return render("stream.html", request, {"kinds": STREAM_KINDS, "chosen": kinds, "q": text,
                                           "live_query": request.query_string})


async def tail(request: web.Request) -> web.StreamResponse:
    """SSE: one table row per matching event, each with its event id; a reconnecting browser
    (Last-Event-ID) gets what it missed from the notifier's replay buffer (`live.stream`)."""
    kinds, text = _filters(request)
    env = aiohttp_jinja2.get_env(request.app)

    async def row(event: events.Event) -> str | None:
        data = json.loads(event.model_dump_json())
        if not matches(data, text):
            return None
        return env.get_template("stream_row.html").render(
            event=data, summary=summary(data), at=parse_time(data.get("occurred_at")))

    def gap() -> str:
        return env.get_template("stream_gap.html").render()

    return await live.stream(request, stream_patterns(kinds), row, gap=gap)
