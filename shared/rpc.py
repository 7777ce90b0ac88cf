"""Request/reply messages: how the gateway asks a service to do or read something.

A request names a method, the tenant and the acting principal; a reply carries either a
result or a problem (an HTTP status, a title, a detail and the offending field) that the
gateway turns into `application/problem+json` unchanged.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

import structlog
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .events import SYSTEM, Actor, new_id
from .store import STORE_UNAVAILABLE

log = structlog.get_logger("strongroom.rpc")


class RpcRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    method: str
    tenant_id: str
    actor: Actor = SYSTEM
    correlation_id: str = Field(default_factory=new_id)
    # One per request message (the correlation id is one per operator request, and a view may make
    # several calls under it): a broker's redelivery of the message carries the same one, so a
    # state-changing method answers a redelivery from its record instead of running again.
    request_id: str = Field(default_factory=new_id)
    source_ip: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)


# The namespace of ids derived from a request (uuid5): fixed, so every replica derives alike.
_DERIVED = uuid.UUID("6f1d4c1e-2b7a-5c1e-9d2f-4a3b5c6d7e8f")


def derived_id(request: RpcRequest, prefix: str = "") -> str:
    """An id every delivery of `request` derives alike: what a redelivered request creates again
    collides, on a unique index, with what its first delivery created before its replica died."""
    return prefix + uuid.uuid5(_DERIVED, f"{request.tenant_id}/{request.method}/{request.request_id}").hex


class Problem(BaseModel):
    model_config = ConfigDict(frozen=True)
    status: int
    title: str
    detail: str = ""
    field: str | None = None


class RpcReply(BaseModel):
    model_config = ConfigDict(frozen=True)
    result: Any = None
    problem: Problem | None = None

    @classmethod
    def fail(cls, status: int, title: str, detail: str = "", field: str | None = None) -> RpcReply:
        return cls(problem=Problem(status=status, title=title, detail=detail, field=field))


class ProblemError(Exception):
    """Raised by handlers and views for an expected failure; rendered as problem+json."""

    def __init__(self, status: int, title: str, detail: str = "", field: str | None = None):
        super().__init__(detail or title)
        self.problem = Problem(status=status, title=title, detail=detail, field=field)


class NotFound(ProblemError):
    def __init__(self, what: str, field: str | None = None):
        super().__init__(404, "Not Found", f"{what} not found", field)


# Strings shorter than this are not scrubbed from a message (they would garble its words); no
# secret or hostile payload fits in three characters.
_ECHO_MIN = 4
_PLAIN_NAME = re.compile(r"^[A-Za-z0-9_.:@/-]{1,64}$")


def _input_strings(value: Any, out: set[str], budget: list[int]) -> None:
    """Every string in an offending input (keys and leaves, and numbers as written), bounded."""
    if budget[0] <= 0:
        return
    budget[0] -= 1
    if isinstance(value, dict):
        for k, v in value.items():
            if not _PLAIN_NAME.match(str(k)):  # a plain key is a field's name: messages may say it
                _input_strings(k, out, budget)
            _input_strings(v, out, budget)
    elif isinstance(value, list | tuple | set | frozenset):
        for v in value:
            _input_strings(v, out, budget)
    elif isinstance(value, str | int | float) and not isinstance(value, bool):
        text = str(value)
        if len(text) >= _ECHO_MIN:
            out.update((text, repr(text)[1:-1]))  # as written, and as a `!r` quotes it


def field_name(loc: tuple[Any, ...] | list[Any]) -> str:
    """A `loc` as a dotted field name. A part that is no plain name (an unknown key holding control
    characters, markup or a megabyte of text) is shown as `…`: naming a field never echoes input."""
    return ".".join(str(p) if isinstance(p, int) or _PLAIN_NAME.match(str(p)) else "…" for p in loc)


def validation_error(exc: ValidationError) -> tuple[str, str]:
    """The first error of `exc` as (field, message): the field is pydantic's `loc`, the message
    its text with every piece of the offending input scrubbed out, so a problem never echoes
    input (a custom validator's message may quote it, as a value error's `ctx` does)."""
    err = exc.errors(include_url=False, include_input=True)[0]
    field = field_name(err["loc"])
    message = err["msg"]
    pieces: set[str] = set()
    _input_strings(err.get("input"), pieces, [1000])
    for piece in sorted(pieces, key=len, reverse=True):
        message = message.replace(piece, "…")
    return field, message


def encode(model: BaseModel) -> bytes:
    return model.model_dump_json().encode()


def decode_request(body: bytes) -> RpcRequest:
    return RpcRequest.model_validate(json.loads(body))


def decode_reply(body: bytes) -> RpcReply:
    return RpcReply.model_validate(json.loads(body))


class Replies(Protocol):
    """Where a service records the replies of its state-changing calls (`shared/store_replies.py`)."""

    async def recorded(self, request: RpcRequest) -> RpcReply | None: ...
    async def record(self, request: RpcRequest, reply: RpcReply) -> None: ...


class Methods:
    """A service's RPC methods: name -> (params model, result model, handler).

    Params are validated once, here, so a malformed call is refused naming the field, as HTTP
    is; the handler gets the model instance. A handler returns an instance of its result model
    (or None for an empty answer), which is what goes on the wire.

    A method added with `changes=True` takes effect at most once per request id: the broker
    redelivers a request whose replica died before acking it, and the next replica answers it
    with the reply recorded in `replies` (problems included: a refusal the caller may have seen
    must not turn into an effect) instead of running it again. A reply holding a secret is never
    recorded: such a method is added without `changes` and guards itself.
    """

    def __init__(self, replies: Replies | None = None) -> None:
        self._methods: dict[str, tuple[type[BaseModel] | None, type[BaseModel] | None, Any]] = {}
        self._changes: set[str] = set()
        self._replies = replies

    def add(
        self,
        name: str,
        handler: Any,
        params: type[BaseModel] | None = None,
        result: type[BaseModel] | None = None,
        *,
        changes: bool = False,
    ) -> None:
        self._methods[name] = (params, result, handler)
        if changes:
            self._changes.add(name)

    def changing(self) -> set[str]:
        """The methods that change state (recorded once per request id)."""
        return set(self._changes)

    def contracts(self) -> dict[str, tuple[type[BaseModel] | None, type[BaseModel] | None]]:
        """Each method's declared params and result models (for tests and documentation)."""
        return {name: (params, result) for name, (params, result, _) in self._methods.items()}

    async def __call__(self, request: RpcRequest) -> RpcReply:
        entry = self._methods.get(request.method)
        if entry is None:
            return RpcReply.fail(400, "Bad Request", f"unknown method {request.method!r}")
        model, _result, handler = entry
        args: Any = request.params
        if model is not None:
            try:
                args = model.model_validate(request.params)
            except ValidationError as exc:
                field, message = validation_error(exc)
                return RpcReply.fail(422, "Unprocessable Content", f"{field}: {message}", field)
        if self._replies is None or request.method not in self._changes or not request.tenant_id:
            return RpcReply(result=await handler(request, args))
        recorded = await self._replies.recorded(request)
        if recorded is not None:
            return recorded
        try:
            reply = RpcReply(result=await handler(request, args))
        except ProblemError as exc:
            reply = RpcReply(problem=exc.problem)
        await self._replies.record(request, reply)
        return reply


RpcHandler = Callable[[RpcRequest], Awaitable[RpcReply]]


async def answer(body: bytes, handler: RpcHandler) -> RpcReply:
    """Decode a request message, run its handler with the request's context bound to the logs, and
    turn every failure into a problem reply (malformed 400, the store away 503, anything else 500)."""
    try:
        request = decode_request(body)
    except Exception:
        return RpcReply.fail(400, "Bad Request", "malformed request message")
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(
        correlation_id=request.correlation_id, tenant_id=request.tenant_id, method=request.method)
    try:
        return await handler(request)
    except ProblemError as exc:
        return RpcReply(problem=exc.problem)
    except STORE_UNAVAILABLE as exc:
        log.warning("store_unavailable", error=type(exc).__name__)
        return RpcReply.fail(503, "Service Unavailable", "the service's store is unavailable; retry later")
    except Exception:
        log.exception("rpc_handler_failed")
        return RpcReply.fail(500, "Internal Server Error", "the service failed to handle the request")
