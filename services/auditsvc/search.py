"""Finding records: the index terms of a record, and the criteria of a query as a pure predicate.

The store indexes records by chunk (one entry per distinct term per appended chunk, not per
record), so an index hit only says "somewhere in seqs first..last"; `Criteria.matches` then
decides exactly on each record. Terms are therefore allowed to over-match: every identifier a
query can name (actor, resource, device, key, correlation id) shares one "v:" term, which keeps
the number of index entries, the dominant cost of an insert, low. Event ids are not terms: they
are unique per record, so indexing them would double those entries; a chunk keeps them in a plain
list instead, and redelivered events are found by time (an event's record has its time, and the
chunk holding it spans that time).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from shared.commands_audit import AuditQuery
from shared.rpc import ProblemError


def _value(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def record_terms(record: Mapping[str, Any]) -> set[str]:
    """The terms a record is found by; none of them is part of the chained record."""
    details = record.get("details") or {}
    actor = record.get("actor") or {}
    resource = record.get("resource") or {}
    terms = {f"action:{record['action']}", f"outcome:{record['outcome']}"}
    for value in (actor.get("id"), resource.get("id"), details.get("device_id"), details.get("key_id"),
                  record.get("correlation_id")):
        if (v := _value(value)) is not None:
            terms.add(f"v:{v}")
    return terms


def chunk_postings(records: Sequence[Mapping[str, Any]]) -> tuple[list[str], list[list[int]]]:
    """Distinct terms of a run of records, sorted (one index entry each), and for each term the
    offsets in the run of the records that carry it."""
    postings: dict[str, list[int]] = {}
    for offset, record in enumerate(records):
        for term in record_terms(record):
            postings.setdefault(term, []).append(offset)
    terms = sorted(postings)
    return terms, [postings[t] for t in terms]


@dataclass(frozen=True, slots=True)
class Criteria:
    """What `GET /v1/audit` asked for, combined with AND; times are RFC 3339 UTC strings."""

    action: str | None = None
    actor: str | None = None
    resource: str | None = None
    outcome: str | None = None
    correlation_id: str | None = None
    device: str | None = None
    key: str | None = None
    since: str | None = None
    until: str | None = None

    @property
    def lead_term(self) -> str | None:
        """The index term to look chunks up by: the most selective field given."""
        for value in (self.correlation_id, self.key, self.device, self.resource, self.actor):
            if value is not None:
                return f"v:{value}"
        if self.action is not None:
            return f"action:{self.action}"
        if self.outcome is not None:
            return f"outcome:{self.outcome}"
        return None

    @property
    def has_time(self) -> bool:
        return self.since is not None or self.until is not None

    @property
    def is_everything(self) -> bool:
        return self.lead_term is None and not self.has_time

    def overlaps(self, min_time: str, max_time: str) -> bool:
        """Could a chunk whose records' times lie in [min_time, max_time] hold a match?"""
        return (self.since is None or max_time >= self.since) and (self.until is None or min_time <= self.until)

    def matches(self, record: Mapping[str, Any]) -> bool:
        resource = record.get("resource") or {}
        details = record.get("details") or {}
        if self.action is not None and record.get("action") != self.action:
            return False
        if self.actor is not None and (record.get("actor") or {}).get("id") != self.actor:
            return False
        if self.resource is not None and resource.get("id") != self.resource:
            return False
        if self.outcome is not None and record.get("outcome") != self.outcome:
            return False
        if self.correlation_id is not None and record.get("correlation_id") != self.correlation_id:
            return False
        # A device or key appears as the record's resource or in its details (a key request names both).
        for wanted, rtype in ((self.device, "device"), (self.key, "key")):
            if wanted is not None and not (
                (resource.get("type") == rtype and resource.get("id") == wanted)
                or details.get(f"{rtype}_id") == wanted
            ):
                return False
        # Records keep RFC 3339 UTC strings, which sort in time order.
        time = record.get("time") or ""
        if self.since is not None and time < self.since:
            return False
        return self.until is None or time <= self.until


def rfc3339(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).isoformat().replace("+00:00", "Z")


def criteria(q: AuditQuery) -> Criteria:
    """The search criteria of a query; raises a 400 problem naming the field for a bad range."""
    if q.since and q.until and q.since > q.until:
        raise ProblemError(400, "Bad Request", "since must not be after until", "since")
    return Criteria(action=q.action, actor=q.actor, resource=q.resource, outcome=q.outcome,
                    correlation_id=q.correlation_id, device=q.device, key=q.key,
                    since=rfc3339(q.since) if q.since else None, until=rfc3339(q.until) if q.until else None)
