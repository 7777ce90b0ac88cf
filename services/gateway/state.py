"""The gateway's app state and request helpers: what every view reads, parses and answers with."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from shared import rpc
from shared.bus import Bus
from shared.observability import Probe
from shared.rpc import ProblemError, field_name

from .auth import DeviceAuthenticator, Principal, TokenAuthenticator
from .backlog import Backlog
from .evidence.base import Verifier
from .problems import validation_problem
from .ratelimit import Throttles
from .releases import ReleaseWaiters
from .settings import GatewaySettings
from .store import GatewayStore

M = TypeVar("M", bound=BaseModel)


@dataclass
class Gateway:
    """Everything the views need, bound once in `app.py`."""

    settings: GatewaySettings
    bus: Bus
    store: GatewayStore
    operators: TokenAuthenticator
    devices: DeviceAuthenticator
    waiters: ReleaseWaiters
    evidence: Mapping[str, Verifier]  # evidence kind -> its verifier (evidence/__init__.py)
    backlog: Backlog  # cached depths of the release path's queues (load shedding)


GATEWAY = web.AppKey("gateway", Gateway)
PRINCIPAL = web.RequestKey("principal", Principal)
CORRELATION_ID = web.RequestKey("correlation_id", str)
RAW_BODY = web.RequestKey("raw_body", bytes)
THROTTLES = web.AppKey("throttles", Throttles)
PROBE = web.AppKey("probe", Probe)
# Set by a view that already audited its own refusal (a failed sign-in): no second record.
REFUSAL_RECORDED = web.RequestKey("refusal_recorded", bool)


def _gw(request: web.Request) -> Gateway:
    return request.app[GATEWAY]


def _principal(request: web.Request) -> Principal:
    return request[PRINCIPAL]


async def json_object(request: web.Request) -> dict[str, Any]:
    """The request body as a JSON object, or a 400 naming `body`."""
    raw = request.get(RAW_BODY)
    if raw is None:
        raw = await request.read()
    if not raw:
        raise ProblemError(400, "Bad Request", "a JSON body is required", "body")
    try:
        data = json.loads(raw, parse_constant=_not_json)  # NaN and Infinity are no JSON (RFC 8259)
    except (ValueError, UnicodeDecodeError):
        raise ProblemError(400, "Bad Request", "body is not valid JSON", "body") from None
    except RecursionError:  # nesting past the parser's own limit: hostile input, not our fault
        raise ProblemError(400, "Bad Request", f"body nests deeper than {MAX_JSON_DEPTH} levels", "body") from None
    if not isinstance(data, dict):
        raise ProblemError(400, "Bad Request", "body must be a JSON object", "body")
    if json_depth(data) > MAX_JSON_DEPTH:
        raise ProblemError(400, "Bad Request", f"body nests deeper than {MAX_JSON_DEPTH} levels", "body")
    bad = unstorable(data)
    if bad is not None:
        raise ProblemError(400, "Bad Request", f"{bad[0]}: {bad[1]}", bad[0])
    return data


# No request needs more: the deepest are policies, whose own parser bounds rule nesting further.
# Bounding it here keeps every later recursive walk (validation, policy parsing) far from
# Python's recursion limit.
MAX_JSON_DEPTH = 64


def json_depth(value: Any) -> int:
    """How deeply a parsed JSON value nests objects and arrays (a scalar is 0); iterative."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        children = node.values() if isinstance(node, dict) else node if isinstance(node, list) else None
        if children is None:
            continue
        deepest = max(deepest, depth)
        if depth <= MAX_JSON_DEPTH:  # past the limit the answer is known: stop walking
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _is_text(value: str) -> bool:
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


# What no store or event can hold, found before anything is forwarded: text with a lone UTF-16
# surrogate (JSON escapes may spell one), a key with NUL (BSON keys are C strings), an integer past
# 64 bits (BSON and JSON readers elsewhere stop there).
INT64 = (-(2**63), 2**63 - 1)


def unstorable(value: Any) -> tuple[str, str] | None:
    """(field, why) of the first value no store could hold, or None; iterative (depth is bounded already)."""
    stack: list[tuple[Any, tuple[Any, ...]]] = [(value, ())]
    while stack:
        node, path = stack.pop()
        if isinstance(node, str) and not _is_text(node):
            return field_name(path) or "body", "a lone UTF-16 surrogate is not text"
        if isinstance(node, int) and not isinstance(node, bool) and not INT64[0] <= node <= INT64[1]:
            return field_name(path) or "body", "integers must fit in 64 bits"
        if isinstance(node, dict):
            for key, child in node.items():
                if not _is_text(key) or "\x00" in key:
                    return (field_name((*path, "…")) if path else "body"), "a key must be text without NUL"
                stack.append((child, (*path, key)))
        elif isinstance(node, list):
            stack.extend((child, (*path, i)) for i, child in enumerate(node))
    return None


async def body_as(request: web.Request, model: type[M], *, strict: bool | None = None) -> M:
    """The request body validated as `model` (`strict` overrides the model's own setting), or a
    problem naming the field."""
    data = await json_object(request)
    try:
        return model.model_validate(data, strict=strict)
    except ValidationError as exc:
        problem = validation_problem(exc)
        raise ProblemError(problem.status, problem.title, problem.detail, problem.field) from None


def _query(request: web.Request, model: type[M]) -> M:
    try:
        return model.model_validate(dict(request.query))
    except ValidationError as exc:
        problem = validation_problem(exc, status=400)
        raise ProblemError(400, "Bad Request", problem.detail, problem.field) from None


def rfc3339(moment: datetime) -> str:
    """A moment as RFC 3339 (`2026-12-04T18:59:00.476Z`), as pydantic writes it; a naive one is UTC
    (the stores keep UTC)."""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return rfc3339(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, set | frozenset | tuple):
        return sorted(value) if isinstance(value, set | frozenset) else list(value)
    raise TypeError(f"{type(value).__name__} is not JSON")


def dumps(data: Any) -> str:
    """The gateway's one JSON encoder: datetimes are RFC 3339 everywhere."""
    return json.dumps(data, default=_encode)


def _json(data: Any, status: int = 200) -> web.Response:
    return web.json_response(data, status=status, dumps=dumps)


def _now() -> datetime:
    return datetime.now(UTC)


async def _call(request: web.Request, service: str, method: str, params: Mapping[str, Any] | None = None) -> Any:
    """Asks `service` to run `method` for the calling principal's tenant. `params` is data, never
    spread into keyword arguments: a query key or body field may be named anything."""
    gw = _gw(request)
    principal = _principal(request)
    reply = await gw.bus.call(
        service,
        rpc.RpcRequest(
            method=method, tenant_id=principal.tenant_id, actor=principal.actor,
            correlation_id=request[CORRELATION_ID], source_ip=request.remote, params=dict(params or {}),
        ),
        timeout=gw.settings.rpc_timeout_seconds,
    )
    if reply.problem is not None:
        raise ProblemError(reply.problem.status, reply.problem.title, reply.problem.detail, reply.problem.field)
    return reply.result


def _event_fields(request: web.Request) -> dict[str, Any]:
    principal = _principal(request)
    return {
        "tenant_id": principal.tenant_id,
        "actor": principal.actor,
        "correlation_id": request[CORRELATION_ID],
        "source_ip": request.remote,
    }
