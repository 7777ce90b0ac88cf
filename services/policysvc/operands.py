"""Operand values shared by the parser (the expected side of a test) and the evaluator (the actual side).

Timestamps, versions and JSON values are read the same way whether a policy author wrote them or an
agent reported them, so that ``1.10.0 > 1.9`` and ``true != 1`` hold on both sides of a comparison.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any, Literal, NamedTuple

MAX_MATCH_INPUT = 4096  # longest fact a pattern is run against
DAY_NAMES = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}(?:[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d{1,9})?(?:[Zz]|[+-]\d{2}:\d{2}))?"
)
_VERSION = re.compile(
    r"[vV]?(\d{1,18}(?:\.\d{1,18})*)(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z.-]+)?"
)


@lru_cache(maxsize=4096)
def parse_timestamp(text: str) -> datetime | None:
    """An aware datetime from an RFC 3339 date-time, or a full-date taken as midnight UTC."""
    if len(text) > 40 or not _RFC3339.fullmatch(text):
        return None
    try:
        parsed = datetime.fromisoformat(text.upper())
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


@lru_cache(maxsize=4096)
def parse_version(text: str) -> tuple | None:
    """A sort key so that 1.10.0 > 1.9.3, 1.2 == 1.2.0 and 1.0.0-rc.1 < 1.0.0 (SemVer precedence)."""
    if len(text) > 128:
        return None
    found = _VERSION.fullmatch(text)
    if not found:
        return None
    core = [int(part) for part in found.group(1).split(".")]
    while len(core) > 1 and core[-1] == 0:
        core.pop()
    prerelease = found.group(2)
    if prerelease is None:
        return (tuple(core), (1,))
    ids = tuple((0, int(i), "") if i.isdigit() else (1, 0, i) for i in prerelease.split("."))
    return (tuple(core), (0, *ids))


def json_key(value: Any) -> tuple:
    """A hashable form of a JSON value in which true != 1 but 1 == 1.0, as JSON means them."""
    kind = type(value)
    if kind is str:
        return ("s", value)
    if kind is bool:
        return ("b", value)
    if kind is int or kind is float:
        return ("n", value)
    if value is None:
        return ("z",)
    if isinstance(value, Mapping):
        return ("o", tuple(sorted((str(k), json_key(v)) for k, v in value.items())))
    if isinstance(value, (list, tuple)):
        return ("a", tuple(json_key(v) for v in value))
    return ("?", repr(value))


@dataclass(frozen=True, slots=True)
class Comparable:
    """An ordered operand: its kind decides how the fact is read before comparing."""

    kind: Literal["number", "version", "time"]
    key: Any


@dataclass(frozen=True, slots=True)
class TimeWindow:
    days: frozenset[int]  # 0 = Monday; for overnight windows, the day the window opens
    start: int  # minutes after local midnight, inclusive
    end: int  # exclusive; may be 1440 ("24:00")

    def contains(self, local: datetime) -> bool:
        minute = local.hour * 60 + local.minute
        day = local.weekday()
        if self.start < self.end:
            return day in self.days and self.start <= minute < self.end
        return (minute >= self.start and day in self.days) or (
            minute < self.end and (day - 1) % 7 in self.days
        )


class Network(NamedTuple):
    """A CIDR as integers, so membership is one mask and compare."""

    version: int
    address: int
    mask: int
    text: str


_TYPE_NAMES = {"s": "a string", "n": "a number", "b": "a boolean", "z": "null"}


def type_name(value: Any) -> str:
    """A fact's JSON type in words, for a note saying why a test could not compare it."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return _TYPE_NAMES.get(json_key(value)[0], "an unknown type")


@lru_cache(maxsize=4096)
def address_forms(text: str) -> tuple[tuple[int, int], ...] | None:
    """(version, integer) forms of an address; an IPv4-mapped IPv6 address also as IPv4, since
    dual-stack sockets report IPv4 peers as ::ffff:a.b.c.d."""
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return None
    forms = [(address.version, int(address))]
    if address.version == 6 and address.ipv4_mapped is not None:
        forms.append((4, int(address.ipv4_mapped)))
    return tuple(forms)


def glob_to_regex(pattern: str) -> str:
    """fnmatch syntax (*, ?, [seq], [!seq]) as an anchored RE2 pattern, so globs are linear too."""
    out = ["(?s)^"]
    i, n = 0, len(pattern)
    while i < n:
        char = pattern[i]
        i += 1
        if char == "*":
            out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            j = i
            if j < n and pattern[j] == "!":
                j += 1
            if j < n and pattern[j] == "]":
                j += 1
            j = pattern.find("]", j)
            if j < 0:
                out.append(r"\[")
                continue
            body = pattern[i:j].replace("\\", "\\\\").replace("[", r"\[")
            i = j + 1
            if body.startswith("!"):
                body = "^" + body[1:]
            elif body.startswith("^"):
                body = "\\" + body
            out.append(f"[{body}]")
        else:
            out.append(re.escape(char))
    out.append("$")
    return "".join(out)
