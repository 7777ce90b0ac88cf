"""What every policysvc handler shares: event fields from a request, and problems from errors."""

from __future__ import annotations

from typing import Any

from shared import rpc

from .rules import PolicyError


def event_fields(request: rpc.RpcRequest) -> dict[str, Any]:
    return {"tenant_id": request.tenant_id, "correlation_id": request.correlation_id, "actor": request.actor,
            "source_ip": request.source_ip}


def policy_problem(exc: PolicyError, prefix: str = "") -> rpc.ProblemError:
    """A policy or group document's error as a 422 naming the field (under ``prefix``)."""
    path = f"{prefix}.{exc.path}" if prefix and exc.path and not exc.path.startswith("[") else prefix + exc.path
    return rpc.ProblemError(422, "Unprocessable Content", f"{path or '<document>'}: {exc.message}", path or None)


def page_limit(value: int | str | None) -> int:
    """A listing's limit from a query string: 100 when absent, clamped to 1..1000."""
    try:
        return min(max(int(value or 100), 1), 1000)
    except ValueError:
        raise rpc.ProblemError(400, "Bad Request", "limit must be an integer", "limit") from None
