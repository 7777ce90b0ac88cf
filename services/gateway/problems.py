"""Errors become `application/problem+json` (RFC 9457) here, and only here."""

from __future__ import annotations

import json
from typing import Any

import structlog
from aiohttp import web
from pydantic import ValidationError

from shared.bus import AuditRefused, BusError, BusTimeout
from shared.rpc import Problem, ProblemError, validation_error
from shared.store import STORE_UNAVAILABLE

log = structlog.get_logger("strongroom.gateway")

CONTENT_TYPE = "application/problem+json"
# What every 503 tells the client (a backing service, the broker or the store is unavailable).
RETRY_AFTER_UNAVAILABLE_SECONDS = 5


def problem_response(problem: Problem, **extra: Any) -> web.Response:
    body: dict[str, Any] = {
        "type": "about:blank",
        "title": problem.title,
        "status": problem.status,
        "detail": problem.detail,
    }
    if problem.field:
        body["field"] = problem.field
    body.update(extra)
    response = web.Response(status=problem.status, text=json.dumps(body), content_type=CONTENT_TYPE)
    if problem.status == 503:
        response.headers["Retry-After"] = str(RETRY_AFTER_UNAVAILABLE_SECONDS)
    return response


def validation_problem(exc: ValidationError, *, status: int = 422) -> Problem:
    # Only the location and pydantic's message, scrubbed of the input: never echo it back.
    field, message = validation_error(exc)
    return Problem(status=status, title="Unprocessable Content", detail=f"{field or 'body'}: {message}",
                   field=field or None)  # a rule across fields names none


class ExtraProblem(ProblemError):
    """A problem with extra members (a denial's reasons, a pending request's id)."""

    def __init__(self, status: int, title: str, detail: str = "", **extra: Any):
        super().__init__(status, title, detail)
        self.extra = extra


@web.middleware
async def problem_middleware(request: web.Request, handler):
    try:
        return await handler(request)
    except ExtraProblem as exc:
        return problem_response(exc.problem, **exc.extra)
    except ProblemError as exc:
        response = problem_response(exc.problem)
        response.headers.update(getattr(exc, "headers", {}))  # e.g. Retry-After on a 429
        return response
    except ValidationError as exc:
        return problem_response(validation_problem(exc))
    except BusTimeout as exc:
        return problem_response(Problem(status=504, title="Gateway Timeout", detail=str(exc)))
    except AuditRefused as exc:
        log.warning("audit_unavailable", error=str(exc))
        return problem_response(Problem(
            status=503, title="Service Unavailable",
            detail="the audit log cannot take the record of this request, so it was not carried out; retry later"))
    except STORE_UNAVAILABLE as exc:  # the store down or hung: bounded by its timeouts (`shared/store.py`)
        log.warning("store_unavailable", error=type(exc).__name__)
        return problem_response(Problem(status=503, title="Service Unavailable", detail="the store is unavailable; retry later"))
    except BusError as exc:
        log.warning("bus_unavailable", error=str(exc))
        return problem_response(Problem(status=503, title="Service Unavailable", detail="a backing service is unavailable"))
    except web.HTTPRequestEntityTooLarge as exc:
        return problem_response(Problem(status=413, title="Content Too Large", detail=exc.text or "body too large", field="body"))
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = problem_response(Problem(status=exc.status, title=exc.reason, detail=exc.text or ""))
        if "Allow" in exc.headers:  # a 405 says which methods the resource has (RFC 9110)
            response.headers["Allow"] = exc.headers["Allow"]
        return response
    except Exception:
        log.exception("unhandled_error")
        return problem_response(Problem(status=500, title="Internal Server Error", detail="unexpected error"))
