"""How the gateway's refusals reach agent code: one `AgentError` subclass per kind of answer.

Every refusal arrives as application/problem+json; `error_from` maps its status to the class a
caller can act on (retry a `ServiceUnavailable` or `TooManyRequests` after ``retry_after``
seconds, show a `KeyDenied`'s reasons) and keeps the problem document for detail.
"""

from __future__ import annotations

import email.utils
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

# Where `_post` keeps a Retry-After for `_error_from`; not a name the gateway's problem documents use.
RETRY_AFTER_KEY = "\x00retry_after"


class AgentError(Exception):
    """The gateway refused or failed a request; `status` is None when no HTTP status applies."""

    def __init__(
        self,
        status: int | None,
        title: str,
        detail: str = "",
        reasons: Sequence[str] = (),
        *,
        problem: Mapping[str, Any] | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.status = status
        self.retry_after = retry_after  # seconds, from a 429 or 503 answer's Retry-After header
        self.title = title
        self.detail = detail
        self.reasons = list(reasons)
        self.problem: dict[str, Any] = dict(problem or {})
        super().__init__(self._message())

    @property
    def type(self) -> str | None:
        return self.problem.get("type")

    @property
    def field(self) -> str | None:
        return self.problem.get("field")

    def _message(self) -> str:
        message = self.title if self.status is None else f"{self.title} (HTTP {self.status})"
        if self.detail and self.detail != self.title:
            message += f": {self.detail}"
        return message


class KeyDenied(AgentError):
    """403: policy denied the release; `reasons` say which rules or facts, as far as policy discloses."""

    @property
    def disclosed(self) -> Any:
        return self.problem.get("disclosed")


class ApprovalPending(AgentError):
    """202: policy requires a human approval; `request_id` identifies the waiting request."""

    def __init__(self, request_id: str, *, problem: Mapping[str, Any] | None = None) -> None:
        self.request_id = request_id
        super().__init__(202, "approval required", f"key request {request_id} is pending approval", problem=problem)


class NotAuthenticated(AgentError):
    """401: the signature was rejected (bad, stale or replayed) or the device was revoked."""


class KeyNotFound(AgentError):
    """404: no such key for this tenant."""


class KeyNotActive(AgentError):
    """409: the key (version) exists but is not in a state that allows release."""


class EnrollmentRejected(AgentError):
    """The enrolment token or request was refused (invalid, expired or used token, bad name)."""


class ServiceUnavailable(AgentError):
    """503/504, or the gateway could not be reached or answered nonsense; worth retrying later."""


class TooManyRequests(AgentError):
    """429: this device or address is past its request budget; `retry_after` says when to try again."""


class EvidenceUnavailable(AgentError):
    """This VM's cloud metadata service gave no evidence to send."""


class ProtocolError(AgentError):
    """The gateway's answer does not follow the agent protocol (or does not open with our key)."""


KEY_REQUEST_ERRORS: dict[int, type[AgentError]] = {
    401: NotAuthenticated,
    403: KeyDenied,
    404: KeyNotFound,
    409: KeyNotActive,
    429: TooManyRequests,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}
ENROLL_ERRORS: dict[int, type[AgentError]] = {
    400: EnrollmentRejected,
    401: EnrollmentRejected,
    403: EnrollmentRejected,
    404: EnrollmentRejected,
    409: EnrollmentRejected,
    410: EnrollmentRejected,
    422: EnrollmentRejected,
    429: TooManyRequests,
    502: ServiceUnavailable,
    503: ServiceUnavailable,
    504: ServiceUnavailable,
}


def error_from(status: int, document: Mapping[str, Any], errors: Mapping[int, type[AgentError]]) -> AgentError:
    reasons = document.get("reasons")
    error_type = errors.get(status)
    if error_type is None:
        error_type = ServiceUnavailable if status >= 500 else AgentError
    problem = {k: v for k, v in document.items() if k != RETRY_AFTER_KEY}
    return error_type(
        status,
        str(document.get("title") or f"HTTP {status}"),
        str(document.get("detail") or ""),
        [str(reason) for reason in reasons] if isinstance(reasons, list) else [],
        problem=problem,
        retry_after=document.get(RETRY_AFTER_KEY),
    )


def retry_after_seconds(value: str | None) -> float | None:
    """Retry-After as seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3); None if absent or unreadable."""
    if not value:
        return None
    text = value.strip()
    if text.isdigit():
        return float(text)
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        return None
    return max(0.0, (when - datetime.now(UTC)).total_seconds())
