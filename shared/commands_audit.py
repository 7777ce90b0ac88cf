"""Request and reply contracts of auditsvc's methods: what the gateway sends, what it gets back.

A malformed call is refused naming the field, with the status HTTP uses for that input: a bad
query parameter is a 400, a bad body a 422.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, ClassVar, Literal
from urllib.parse import urlsplit

from cryptography import x509
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    field_validator,
    model_serializer,
    model_validator,
)

from .commands import some_change
from .export_formats import FORWARDABLE
from .rpc import ProblemError, validation_error

_TITLES = {400: "Bad Request", 422: "Unprocessable Content"}


def _refusal(status: int, field: str, message: str) -> ProblemError:
    return ProblemError(status, _TITLES[status], f"{field}: {message}", field)


class Body(BaseModel):
    """Params from a request body: malformed is a 422 naming the field."""

    model_config = ConfigDict(extra="forbid")
    refused_status: ClassVar[int] = 422

    def check(self) -> None:
        """Checks across fields, after each field is valid; a ValueError's message starts with the field it blames."""

    @model_validator(mode="wrap")
    @classmethod
    def _refuse(cls, data: Any, handler: ValidatorFunctionWrapHandler) -> Any:
        try:
            model = handler(data)
            model.check()
        except ValidationError as exc:
            field, message = validation_error(exc)
            raise _refusal(cls.refused_status, field, message) from None
        except ValueError as exc:
            raise _refusal(cls.refused_status, str(exc).split(":", 1)[0], f"Value error, {exc}") from None
        return model


class Query(Body):
    """Params from a query string: malformed is a 400 naming the parameter."""

    refused_status: ClassVar[int] = 400


class NoParams(Body):
    """A method that takes nothing but the tenant and actor of its request."""


class Reply(BaseModel):
    model_config = ConfigDict(frozen=True)


# --- records, exports, checkpoints, reports --------------------------------------------------


class AuditFilters(Query):
    """The filters of audit records (all optional, combined with AND) and the paging cursor."""

    since: datetime | None = None
    until: datetime | None = None
    action: str | None = Field(default=None, max_length=100)
    actor: str | None = Field(default=None, max_length=200)
    resource: str | None = Field(default=None, max_length=200)
    outcome: str | None = Field(default=None, max_length=20)
    correlation_id: str | None = Field(default=None, max_length=100)
    device: str | None = Field(default=None, max_length=200)
    key: str | None = Field(default=None, max_length=200)
    after: int = Field(default=0, ge=0, le=2**63 - 1)


class AuditQuery(AuditFilters):
    """Filters of `GET /v1/audit`, paged by sequence number."""

    limit: int = Field(default=100, ge=1, le=1000)


class RecordPage(Reply):
    items: list[dict[str, Any]]
    next: int | None  # the cursor of the following page; None on the last


class ExportQuery(AuditQuery):
    """A page of `GET /v1/audit/export`: the filters, and one name of shared/export_formats.py."""

    format: str = Field(max_length=20)
    limit: int = Field(default=1000, ge=1, le=5000)


class ExportPage(Reply):
    lines: list[str]
    next: int | None
    total: int | None = None  # records in the whole export; only on the first page

    @model_serializer(mode="wrap")
    def _absent_total(self, handler: Any) -> dict[str, Any]:
        data = handler(self)
        if data.get("total") is None:
            data.pop("total", None)
        return data


class CheckpointQuery(Query):
    after: int = Field(default=0, ge=0, le=2**63 - 1)
    limit: int = Field(default=1000, ge=1, le=10000)


class CheckpointPage(Reply):
    items: list[dict[str, Any]]
    next: int | None


class SigningKeys(Reply):
    current: dict[str, Any] | None
    keys: list[dict[str, Any]]


class AuditStatus(Reply):
    tenant_id: str
    last_seq: int
    last_hash: str
    last_record_time: str | None
    last_checkpoint_seq: int | None
    last_checkpoint_time: Any
    ingestion_lag_seconds: float | None
    last_ingested_at: str | None
    archived_seq: int | None
    archived_hash: str | None
    queue_depth: int | None


REPORT_FORMATS = ("json", "csv", "html")


class ReportQuery(Query):
    since: datetime | None = None
    until: datetime | None = None
    format: Literal[REPORT_FORMATS] = "json"  # type: ignore[valid-type]


class ReportReply(Reply):
    """A report as JSON (`report`), or rendered (`body`, CSV or HTML)."""

    content_type: str
    body: str | None = None
    report: dict[str, Any] | None = None

    @model_serializer(mode="wrap")
    def _one_of(self, handler: Any) -> dict[str, Any]:
        return {k: v for k, v in handler(self).items() if v is not None}


# --- forwarders ------------------------------------------------------------------------------

_PATTERN = re.compile(r"^(?:[a-z0-9_]+|\*|#)(?:\.(?:[a-z0-9_]+|\*|#))*$")
ForwardFormat = Literal[FORWARDABLE]  # type: ignore[valid-type]


def _check_patterns(value: list[str]) -> list[str]:
    for pattern in value:
        if not _PATTERN.match(pattern):
            raise ValueError("each must be an event type pattern (words, '*' or '#', dot-separated)")
    return value


# A DNS name (LDH labels, so it always encodes as IDNA) or an IPv4/IPv6 address.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
HOSTNAME = rf"^{_LABEL}(?:\.{_LABEL})*$|^[0-9]{{1,3}}(?:\.[0-9]{{1,3}}){{3}}$|^[0-9A-Fa-f]*:[0-9A-Fa-f:.]*$"
_NONE = {"type": "null"}
_SYSLOG = {"host": {"type": "string", "minLength": 1, "maxLength": 253, "pattern": HOSTNAME},
           "port": {"type": "integer", "minimum": 1, "maximum": 65535}, "url": _NONE}


class ForwarderSpec(Body):
    """What an operator sets when creating a forwarder (secrets are generated, never chosen)."""

    # Which of url and host/port a kind takes, and TLS settings for syslog_tls only (as `check` says).
    model_config = ConfigDict(extra="forbid", json_schema_extra={"oneOf": [
        {"required": ["kind", "url"], "properties": {
            "kind": {"const": "webhook"}, "host": _NONE, "port": _NONE, "tls_ca_pem": _NONE, "tls_server_name": _NONE,
            "url": {"type": "string", "pattern": r"^https?://[A-Za-z0-9][A-Za-z0-9.-]{0,62}(:[1-9][0-9]{0,3})?(/[!-~]*)?$"}}},
        {"required": ["kind", "host", "port"], "properties": {
            "kind": {"const": "syslog_tcp"}, **_SYSLOG, "tls_ca_pem": _NONE, "tls_server_name": _NONE}},
        {"required": ["kind", "host", "port"], "properties": {"kind": {"const": "syslog_tls"}, **_SYSLOG}},
    ]})

    name: str = Field(min_length=1, max_length=100)
    kind: Literal["syslog_tcp", "syslog_tls", "webhook"]
    format: ForwardFormat = "syslog"
    host: str | None = Field(default=None, max_length=253, pattern=HOSTNAME,
                             description="A DNS name or an IP address")
    port: int | None = Field(default=None, ge=1, le=65535)
    url: str | None = Field(default=None, max_length=2000)
    # Routing-key patterns ("key.*", "approval.#"); empty means every record.
    event_types: list[str] = Field(default_factory=list, max_length=50,
                                   json_schema_extra={"items": {"type": "string", "pattern": _PATTERN.pattern}})
    tls_ca_pem: str | None = Field(default=None, max_length=20000, pattern=r"^\s*-----BEGIN CERTIFICATE-----",
                                   description="PEM CA certificate(s) the syslog server's certificate must chain to")
    tls_server_name: str | None = Field(default=None, max_length=253, pattern=HOSTNAME)
    start: Literal["beginning", "now"] = "beginning"
    enabled: bool = True

    @field_validator("event_types")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        return _check_patterns(value)

    @field_validator("tls_ca_pem")
    @classmethod
    def _certificates(cls, value: str | None) -> str | None:
        """Certificates TLS can load (anything else would stop the forwarder when it connects)."""
        if value is not None:
            try:
                x509.load_pem_x509_certificates(value.encode("ascii"))
            except (ValueError, UnicodeEncodeError):
                raise ValueError("tls_ca_pem must be PEM X.509 certificates") from None
        return value

    def check(self) -> None:
        if self.kind == "webhook":
            parts = urlsplit(self.url or "")
            try:
                parts.port  # noqa: B018 -- raises for a port out of range
            except ValueError:
                raise ValueError("url: the port must be 1..65535") from None
            if parts.scheme not in ("http", "https") or not parts.hostname:
                raise ValueError("url: a webhook needs an http(s) URL")
            try:
                parts.port  # noqa: B018 - raises on a port that is not a number in 0..65535
            except ValueError:
                raise ValueError("url: the port must be a number in 1..65535") from None
            if self.host or self.port:
                raise ValueError("host: a webhook takes url, not host/port")
        else:
            if not self.host or not self.port:
                raise ValueError("host: a syslog forwarder needs host and port")
            if self.url:
                raise ValueError("url: a syslog forwarder takes host/port, not url")
        if self.kind != "syslog_tls" and (self.tls_ca_pem or self.tls_server_name):
            raise ValueError("tls_ca_pem: TLS settings apply to syslog_tls only")

    def destination(self) -> str:
        if self.kind == "webhook":
            parts = urlsplit(self.url or "")
            # The query string may carry a token: it never appears in events or listings.
            return f"{parts.scheme}://{parts.hostname}{':' + str(parts.port) if parts.port else ''}{parts.path}"
        scheme = "tls" if self.kind == "syslog_tls" else "tcp"
        return f"{scheme}://{self.host}:{self.port}"


class ForwarderChange(Body):
    model_config = ConfigDict(extra="forbid", json_schema_extra=some_change)
    """The fields an operator may change later; destination changes mean a new forwarder."""

    name: str | None = Field(default=None, min_length=1, max_length=100)
    format: ForwardFormat | None = None
    event_types: list[str] | None = Field(default=None, max_length=50,
                                          json_schema_extra={"items": {"type": "string", "pattern": _PATTERN.pattern}})
    enabled: bool | None = None

    @field_validator("event_types")
    @classmethod
    def _patterns(cls, value: list[str] | None) -> list[str] | None:
        return value if value is None else _check_patterns(value)


class ForwarderRef(Body):
    forwarder_id: str


class UpdateForwarder(Body):
    forwarder_id: str
    change: ForwarderChange  # a malformed change is refused naming its own field, as the body had it


class ForwarderView(Reply):
    """A forwarder as operators see it: its config, cursor, counters, lag and last error (never
    its secret, except once in the reply that created or rotated it). Kept as stored: the rest of
    the spec (format, destination, event_types, enabled, TLS settings), counters and times too."""

    model_config = ConfigDict(frozen=True, extra="allow")
    forwarder_id: str
    name: str
    kind: Literal["syslog_tcp", "syslog_tls", "webhook"]
    status: str
    cursor: int
    lag_records: int
    lag_seconds: float
    # and `secret`, the webhook signing secret, only in the reply that created or rotated it


class ForwarderList(Reply):
    items: list[ForwarderView]


class ForwarderDeleted(Reply):
    forwarder_id: str
    deleted: bool


# --- retention and archives ------------------------------------------------------------------


class RetentionSetting(Body):
    # Days, fractions allowed (a test's window is seconds); at most a century.
    retention_days: float = Field(gt=0, le=36500)


class RetentionWindow(Reply):
    retention_days: float


class RetentionRun(Reply):
    archives: list[dict[str, Any] | None]  # the archives this run finished


class ArchiveQuery(Query):
    after: int = Field(default=0, ge=0, le=2**63 - 1)  # the last to_seq of the previous page
    limit: int = Field(default=100, ge=1, le=1000)


class ArchivePage(Reply):
    items: list[dict[str, Any]]
    next: int | None


class ArchiveRef(Body):
    archive_id: str


class ArchiveInfo(Reply):
    """What a download needs first; no message carries more than `chunk_bytes` of an archive."""

    archive_id: str
    sha256: str
    bytes: int
    chunk_bytes: int


class ArchiveChunkQuery(Query):
    archive_id: str = Field(max_length=100)
    offset: int = Field(ge=0)


class ArchiveChunk(Reply):
    offset: int
    data: str  # base64
