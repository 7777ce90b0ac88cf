"""The gateway's audit views: checkpoints, signing key, status, exports, forwarders, retention, reports.

All of them ask auditsvc over request/reply; the gateway never opens auditsvc's store.
"""

from __future__ import annotations

import base64

import structlog
from aiohttp import web

from shared import export_formats
from shared.rpc import ProblemError

from .state import _call, _json, json_object

log = structlog.get_logger("strongroom.gateway")


def _cut(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """A stream failed after its headers went out: abort the connection, so the client sees a
    truncated body rather than a complete-looking short one."""
    if request.transport is not None:
        request.transport.abort()
    return response


async def list_checkpoints(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "list_checkpoints", dict(request.query)))


async def signing_key(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "signing_keys"))


async def audit_status(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "status"))


EXPORT_PAGE = 1000


async def export(request: web.Request) -> web.StreamResponse:
    """A time range rendered in one SIEM format, streamed page by page as auditsvc renders it.

    The first page is fetched before anything is sent, so a bad format or range is a clean 400.
    """
    params = dict(request.query)
    if not params.get("format"):
        raise ProblemError(400, "Bad Request", f"format is required ({', '.join(export_formats.NAMES)})", "format")
    if "limit" in params:
        raise ProblemError(400, "Bad Request", "export pages itself; limit is not accepted", "limit")
    params.setdefault("after", "0")
    page = await _call(request, "auditsvc", "export_page", {**params, "limit": EXPORT_PAGE})
    fmt = export_formats.BY_NAME[params["format"]]  # auditsvc refused any other name
    response = web.StreamResponse(headers={
        "Content-Disposition": f'attachment; filename="audit-export.{fmt.extension}"',
        "X-Record-Count": str(page.get("total", 0)),
    })
    response.content_type = fmt.media_type
    response.charset = "utf-8"
    response.enable_chunked_encoding()
    await response.prepare(request)
    sent = 0
    try:
        while True:
            if page["lines"]:
                await response.write(("\n".join(page["lines"]) + "\n").encode("utf-8"))
                sent += len(page["lines"])
            if page["next"] is None:
                break
            page = await _call(request, "auditsvc", "export_page",
                               {**params, "after": str(page["next"]), "limit": EXPORT_PAGE})
    except Exception as exc:
        log.warning("audit_export_aborted", sent=sent, error=str(exc))
        return _cut(request, response)
    await response.write_eof()
    log.info("audit_exported", format=fmt.name, records=sent)
    return response


# --- continuous forwarders (validated by auditsvc, which owns their model) -------------------


async def create_forwarder(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "create_forwarder", await json_object(request)), 201)


async def list_forwarders(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "list_forwarders"))


async def get_forwarder(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "get_forwarder", {"forwarder_id": request.match_info["forwarder_id"]}))


async def update_forwarder(request: web.Request) -> web.Response:
    change = await json_object(request)
    return _json(await _call(request, "auditsvc", "update_forwarder",
                             {"forwarder_id": request.match_info["forwarder_id"], "change": change}))


async def rotate_forwarder_secret(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "rotate_forwarder_secret",
                             {"forwarder_id": request.match_info["forwarder_id"]}))


async def delete_forwarder(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "delete_forwarder", {"forwarder_id": request.match_info["forwarder_id"]}))


# --- retention and archives ----------------------------------------------------------------


async def get_retention(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "get_retention"))


async def set_retention(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "set_retention", await json_object(request)))


async def run_retention(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "run_retention"))


async def list_archives(request: web.Request) -> web.Response:
    return _json(await _call(request, "auditsvc", "list_archives", dict(request.query)))


async def get_archive(request: web.Request) -> web.StreamResponse:
    """Streams the archive chunk by chunk, so neither a reply nor this response holds it whole."""
    archive_id = request.match_info["archive_id"]
    found = await _call(request, "auditsvc", "get_archive", {"archive_id": archive_id})
    response = web.StreamResponse(headers={
        "Content-Type": "application/gzip",
        "Content-Disposition": f'attachment; filename="{found["archive_id"]}.json.gz"',
        "X-Archive-Sha256": found["sha256"],
    })
    response.content_length = found["bytes"]
    await response.prepare(request)
    try:
        for offset in range(0, found["bytes"], found["chunk_bytes"]):
            chunk = await _call(request, "auditsvc", "archive_chunk", {"archive_id": archive_id, "offset": offset})
            await response.write(base64.b64decode(chunk["data"]))
    except Exception as exc:
        log.warning("audit_archive_download_aborted", archive_id=archive_id, error=str(exc))
        return _cut(request, response)
    await response.write_eof()
    return response


# --- reports ------------------------------------------------------------------------------


async def report(request: web.Request) -> web.Response:
    found = await _call(request, "auditsvc", "report", dict(request.query))
    if "report" in found:
        return _json(found["report"])
    headers = {"Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"} \
        if found["content_type"] == "text/html" else {"Content-Disposition": 'attachment; filename="audit-report.csv"'}
    return web.Response(text=found["body"], content_type=found["content_type"], charset="utf-8", headers=headers)
