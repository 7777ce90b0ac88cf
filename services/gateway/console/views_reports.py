"""Reports: the tenant's compliance report (auditsvc's `report` RPC, what `GET /v1/reports` and
`strongroom report` show) over a chosen range, drawn as inline SVG charts (`shared/report_charts`:
presentation attributes only, so the console's CSP holds), with names beside ids and trends."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from aiohttp import web
from markupsafe import Markup

from shared import report_charts

from ..state import _call
from .web import render

# The ranges offered (`?range=`), how far back each reaches (None: every record).
RANGES: dict[str, tuple[str, timedelta | None]] = {
    "24h": ("last 24 hours", timedelta(hours=24)),
    "7d": ("last 7 days", timedelta(days=7)),
    "30d": ("last 30 days", timedelta(days=30)),
    "all": ("everything", None),
}
DEFAULT_RANGE = "7d"


def _range(request: web.Request, fmt: str) -> tuple[str, dict[str, str]]:
    """The chosen range (`?range=`, else the default) and the report query it makes."""
    chosen = request.query.get("range", DEFAULT_RANGE)
    chosen = chosen if chosen in RANGES else DEFAULT_RANGE
    reach = RANGES[chosen][1]
    query = {"format": fmt}
    if reach is not None:
        query["since"] = (datetime.now(UTC) - reach).isoformat()
    return chosen, query


async def export_csv(request: web.Request) -> web.StreamResponse:
    """The same report as CSV (one fact per row, names beside device, key and policy ids), as
    `GET /v1/reports?format=csv` answers it, for download."""
    chosen, query = _range(request, "csv")
    found = await _call(request, "auditsvc", "report", query)
    return web.Response(text=found["body"], content_type="text/csv", charset="utf-8", headers={
        "Content-Disposition": f'attachment; filename="strongroom-report-{chosen}.csv"'})


async def reports(request: web.Request) -> web.StreamResponse:
    chosen, query = _range(request, "json")
    found = await _call(request, "auditsvc", "report", query)
    report = found["report"]
    # SAFETY: the charts escape every text they draw (report_charts), so they are markup already.
    charts = [{"title": title, "svg": Markup(svg)} for title, svg in report_charts.sections(report)]
    return render("reports.html", request, {"report": report, "charts": charts,
                                            "ranges": RANGES, "chosen": chosen})
