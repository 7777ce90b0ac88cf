"""Query strings of the gateway's routes, one model each: the guard validates a route's query
through its model before the view runs (a bad one is a 400 naming the parameter), and the
OpenAPI document lists the model's fields as the operation's query parameters.

Models owned by a service (audit filters, key listing, import parameters) are reused from
shared/; these are the gateway's own and the views' that forward a few keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field

from shared import export_formats
from shared.commands import Strict
from shared.commands_audit import AuditFilters

ExportFormat = Literal[export_formats.NAMES]  # type: ignore[valid-type]
EVENT_TYPE_PATTERNS = r"^(?:[a-z_]+(?:\.[a-z_*]+)?|\*)(?:,(?:[a-z_]+(?:\.[a-z_*]+)?|\*)){0,19}$"


class ExportParams(AuditFilters):
    """`GET /v1/audit/export`: the record filters and a format; the export pages itself (no limit)."""

    format: ExportFormat


class GroupsQuery(Strict):
    kind: Literal["device", "key"] | None = None


class ApprovalsQuery(Strict):
    status: Literal["pending", "approved", "denied", "expired"] | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class DecisionsQuery(Strict):
    device_id: str | None = Field(default=None, min_length=1, max_length=200)
    key_id: str | None = Field(default=None, min_length=1, max_length=200)
    effect: Literal["allow", "deny", "require_approval"] | None = None
    limit: int = Field(default=100, ge=1, le=1000)


class EventStreamQuery(Strict):
    types: str | None = Field(default=None, pattern=EVENT_TYPE_PATTERNS,
                              description="Comma-separated event types or patterns like approval.*")
    last_event_id: str | None = Field(default=None, pattern=r"^[A-Za-z0-9_-]{1,64}$",
                                      description="Resume after this event (as the Last-Event-ID header)")


class WaitQuery(Strict):
    wait: float = Field(default=0, ge=0, le=60, description="Long-poll up to this many seconds for an outcome")


class TenantQuery(Strict):
    tenant: str = Field(min_length=1, max_length=100, description="The tenant id")


class OidcCallbackQuery(Strict):
    """What the OpenID provider sends back; it may add more (`iss`, `session_state`), which is ignored."""

    model_config = ConfigDict(extra="ignore")
    code: str = Field(min_length=1, max_length=1024)
    state: str = Field(min_length=1, max_length=1024)
