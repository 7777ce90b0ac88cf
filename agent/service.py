"""`strongroom-agent run`: heartbeats with fresh facts for as long as the agent runs, at the pace
the gateway asks for, backing off while it cannot be reached or asks the agent to slow down.

The loop is transport-free: it calls ``beat()`` (collect facts, send them with any evidence, get
the gateway's answer) and ``emit(line)`` (one JSON object per heartbeat, for the journal), and it
ends when ``stop`` is set (SIGTERM, SIGINT), cancelling a heartbeat in flight. Nothing secret is
emitted: the answer's status and interval, a digest of the facts sent, and error messages (which
carry the gateway's problem titles, never request bodies).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from agent.client import AgentError
from agent.evidence import EvidenceUnavailableError
from agent.facts import FactsError

DEFAULT_INTERVAL_SECONDS = 60.0  # until the gateway has answered once
MIN_INTERVAL_SECONDS = 1.0
MAX_BACKOFF_SECONDS = 300.0
# What a beat may fail with and be retried: the gateway unreachable or refusing for now, evidence
# or operator facts not available this time. Anything else is a bug and stops the service.
RETRYABLE: tuple[type[Exception], ...] = (AgentError, EvidenceUnavailableError, FactsError, OSError)


@dataclass(frozen=True)
class Beat:
    """One heartbeat's outcome: the gateway's answer and the facts that were sent."""

    answer: Mapping[str, Any]
    facts: Mapping[str, Any]


def interval_from(answer: Mapping[str, Any], override: float | None = None) -> float:
    """Seconds until the next heartbeat: the operator's override, else what the gateway answered
    (``heartbeat_interval_seconds``, or half of ``next_heartbeat_within_seconds`` from a gateway
    that does not say), else the default."""
    if override is not None:
        return override
    for name, share in (("heartbeat_interval_seconds", 1.0), ("next_heartbeat_within_seconds", 0.5)):
        value = answer.get(name)
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            return max(MIN_INTERVAL_SECONDS, value * share)
    return DEFAULT_INTERVAL_SECONDS


def backoff_delay(
    failures: int, *, interval: float, retry_after: float | None = None, rand: Callable[[], float] = random.random,
) -> float:
    """Seconds to wait after `failures` failed beats in a row: exponential from 1 s with jitter (half
    fixed, half random), never past one normal interval (a missed grace period quarantines the
    device) nor MAX_BACKOFF_SECONDS, and never sooner than the gateway's Retry-After."""
    cap = max(MIN_INTERVAL_SECONDS, min(MAX_BACKOFF_SECONDS, interval))
    ceiling = min(cap, 2.0 ** max(0, failures - 1))
    delay = ceiling / 2 + rand() * ceiling / 2
    if retry_after is not None and retry_after > delay:
        return float(retry_after)
    return delay


def facts_digest(facts: Mapping[str, Any]) -> str:
    """SHA-256 of the facts as canonical JSON: shows in the journal when what the agent reports changes."""
    return hashlib.sha256(json.dumps(facts, sort_keys=True, separators=(",", ":"), default=str).encode()).hexdigest()


def beat_line(beat: Beat, *, next_in: float) -> dict[str, Any]:
    answer, integrity = beat.answer, beat.facts.get("integrity")
    firewall = integrity.get("firewall") if isinstance(integrity, Mapping) else None
    return {
        "event": "heartbeat_sent", "at": _now(), "device_id": answer.get("device_id"), "status": answer.get("status"),
        "next_heartbeat_within_seconds": answer.get("next_heartbeat_within_seconds"),
        "next_in_seconds": round(next_in, 3), "facts_sha256": facts_digest(beat.facts),
        "firewall_ruleset_sha256": firewall.get("ruleset_sha256") if isinstance(firewall, Mapping) else None,
    }


def failure_line(exc: Exception, *, failures: int, retry_in: float) -> dict[str, Any]:
    return {
        "event": "heartbeat_failed", "at": _now(), "error": str(exc)[:500], "error_type": type(exc).__name__,
        "http_status": getattr(exc, "status", None), "failures": failures, "retry_in_seconds": round(retry_in, 3),
    }


async def run_service(
    beat: Callable[[], Awaitable[Beat]], *, stop: asyncio.Event, emit: Callable[[dict[str, Any]], None],
    interval: float | None = None, rand: Callable[[], float] = random.random,
) -> int:
    """Beat until `stop` is set; returns the number of heartbeats delivered."""
    delivered, failures = 0, 0
    current = interval if interval is not None else DEFAULT_INTERVAL_SECONDS
    while not stop.is_set():
        sending = asyncio.ensure_future(beat())
        stopping = asyncio.ensure_future(stop.wait())
        try:
            await asyncio.wait({sending, stopping}, return_when=asyncio.FIRST_COMPLETED)
        finally:  # also when the caller cancels the loop: no heartbeat outlives it
            stopping.cancel()
            if not sending.done():
                sending.cancel()
                await asyncio.gather(sending, return_exceptions=True)
        if stop.is_set():
            break
        try:
            outcome = sending.result()
        except RETRYABLE as exc:
            failures += 1
            delay = backoff_delay(failures, interval=current, retry_after=getattr(exc, "retry_after", None), rand=rand)
            emit(failure_line(exc, failures=failures, retry_in=delay))
        else:
            failures, delivered = 0, delivered + 1
            current = delay = interval_from(outcome.answer, interval)
            emit(beat_line(outcome, next_in=delay))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=delay)
    return delivered


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
