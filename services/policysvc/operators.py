"""The evaluator's operators: how each fact test reads its fact and compares it with the policy's value.

Each test runs at most once per evaluation and yields an ``Outcome``: the actual value as the trace
shows it (clipped, detached from the caller's facts), the result and a note. Nothing here raises on
a facts document, however malformed: an unreadable fact makes its test false and the note says why.

``runner`` gives the function a compiled policy calls for one test: the general ``run`` with the
common case (a string fact under plain keys, compared for equality) taken without its layers.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import lru_cache, partial
from typing import Any

from .conditions import Predicate
from .operands import (
    DAY_NAMES,
    MAX_MATCH_INPUT,
    Comparable,
    Network,
    TimeWindow,
    json_key,
    parse_timestamp,
    parse_version,
)

MISSING_TEXT = "<missing>"
MISSING_NOTE = "fact not present"
MAX_CLOCK_SKEW_SECONDS = 300.0  # age_under tolerates agent clocks this far ahead of ours
_NOW_NOTE = "observed.request_time missing; used evaluation time"
_MISSING_OUTCOME = (MISSING_TEXT, False, MISSING_NOTE)
_MISSING = object()

Outcome = tuple[Any, bool, str]  # (actual value as traced, result, note)
Runner = Callable[["Context"], Outcome]


class Context:
    """What one evaluation reads besides the tests: the facts, the clock and the policy's time zone."""

    __slots__ = ("epoch", "facts", "now", "outcomes", "tz")

    def __init__(self, facts: Any, now: datetime) -> None:
        self.facts = facts
        self.now = now
        self.epoch = now.timestamp()
        self.tz: Any = None  # of the policy being evaluated
        self.outcomes: dict[str, Outcome] = {}  # Predicate.signature -> outcome


def run(predicate: Predicate, context: Context) -> Outcome:
    actual = _resolve(context.facts, predicate.keys)
    if actual is _MISSING:
        if predicate.op != "within_time_window":
            return _MISSING_OUTCOME
        actual = context.now.isoformat()  # the gateway always sets it; without it, use our clock
        result, note = _check(predicate, actual, context)
        return actual, result, f"{_NOW_NOTE}; {note}"
    result, note = _check(predicate, actual, context)
    kind = type(actual)
    if kind is str:
        return (actual if len(actual) <= 256 else _clip(actual)), result, note
    return (actual if kind is bool or kind is int or kind is float else _clip(actual)), result, note


def _check(predicate: Predicate, actual: Any, context: Context) -> tuple[bool, str]:
    try:
        result, note = _CHECKS[predicate.op](predicate.operand, actual, context)
    except Exception as exc:
        return False, f"could not evaluate: {type(exc).__name__}"
    return result is True or bool(result), note


def _resolve(facts: Any, keys: tuple[str | int, ...]) -> Any:
    """The value at a fact path, or _MISSING when absent or null."""
    value = facts
    for key in keys:
        kind = type(value)
        if kind is dict:  # decoded JSON: the usual case
            value = value.get(key) if type(key) is str else None
        elif kind is list:
            value = value[key] if type(key) is int and key < len(value) else None
        elif isinstance(value, Mapping) and type(key) is str:
            value = value.get(key)
        else:
            return _MISSING
        if value is None:
            return _MISSING
    return value


def _clip(value: Any) -> Any:
    """A small, detached copy of a fact for the trace, however large or odd the agent's facts are."""
    if type(value) is str:
        return value if len(value) <= 256 else value[:256] + "..."
    if type(value) is list and len(value) <= 32 and all(type(item) is str for item in value):
        return list(value)  # IP addresses: what the JSON round trip below would give, without it
    if isinstance(value, (list, Mapping)):
        if len(value) > 32:
            return f"<{'list' if isinstance(value, list) else 'object'} of {len(value)} items>"
        try:  # the trace is rendered later: it must not change if the caller reuses its facts
            return json.loads(json.dumps(value, sort_keys=True))  # keys as the canonical record has them
        except (TypeError, ValueError, RecursionError):
            return f"<{'list' if isinstance(value, list) else 'object'}>"
    return value


_TYPE_NAMES = {"s": "a string", "n": "a number", "b": "a boolean", "z": "null"}


def _type_name(value: Any) -> str:
    if isinstance(value, list):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return _TYPE_NAMES.get(json_key(value)[0], "an unknown type")


def _equals(expected: tuple, actual: Any, context: Context) -> tuple[bool, str]:
    if type(actual) is str and expected[0] == "s":  # most tests compare strings: no key to build
        return actual == expected[1], ""
    got = json_key(actual)
    if got == expected:
        return True, ""
    return False, "" if got[0] == expected[0] else f"type differs: got {_type_name(actual)}"


def _not_equals(expected: tuple, actual: Any, context: Context) -> tuple[bool, str]:
    result, note = _equals(expected, actual, context)
    return not result, note


def _in(members: frozenset, actual: Any, context: Context) -> tuple[bool, str]:
    return (("s", actual) if type(actual) is str else json_key(actual)) in members, ""


def _not_in(members: frozenset, actual: Any, context: Context) -> tuple[bool, str]:
    return (("s", actual) if type(actual) is str else json_key(actual)) not in members, ""


def _search(pattern: Any, actual: Any, context: Context) -> tuple[bool, str]:
    if type(actual) is not str:
        return False, f"type mismatch: expected a string, got {_type_name(actual)}"
    if len(actual) > MAX_MATCH_INPUT:
        return False, f"input longer than {MAX_MATCH_INPUT} characters"
    return pattern.search(actual) is not None, ""


@lru_cache(maxsize=4096)
def _address_forms(text: str) -> tuple[tuple[int, int], ...] | None:
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


def _cidr_contains(networks: tuple[Network, ...], actual: Any, context: Context) -> tuple[bool, str]:
    """True when any of the fact's addresses lies in any of the networks."""
    candidates = actual if type(actual) is list else [actual]
    unreadable = 0
    for candidate in candidates:
        forms = _address_forms(candidate) if type(candidate) is str else None
        if forms is None:
            unreadable += 1
            continue
        for version, address in forms:
            for network in networks:
                if version == network.version and address & network.mask == network.address:
                    return True, ""
    if not candidates:
        return False, "no IP addresses"
    if unreadable == len(candidates):
        return False, "no valid IP addresses" if type(actual) is list else "type mismatch: not an IP address"
    return False, f"ignored {unreadable} entries that are not IP addresses" if unreadable else ""


def _read_ordered(kind: str, actual: Any) -> Any:
    if kind == "number":
        return actual if type(actual) in (int, float) else None
    if type(actual) is not str:
        return None
    return parse_version(actual) if kind == "version" else parse_timestamp(actual)


_ARTICLES = {"number": "a number", "version": "a version", "time": "an RFC 3339 time"}


def _comparison(compare: Any) -> Any:
    def check(expected: Comparable, actual: Any, context: Context) -> tuple[bool, str]:
        got = _read_ordered(expected.kind, actual)
        if got is None:
            return False, f"type mismatch: expected {_ARTICLES[expected.kind]}, got {_type_name(actual)}"
        return compare(got, expected.key), ""

    return check


def _within_time_window(window: TimeWindow, actual: Any, context: Context) -> tuple[bool, str]:
    moment = parse_timestamp(actual) if type(actual) is str else None
    if moment is None:
        return False, f"type mismatch: expected an RFC 3339 time, got {_type_name(actual)}"
    local = moment.astimezone(context.tz)
    return window.contains(local), f"local time {DAY_NAMES[local.weekday()]} {local:%H:%M} {context.tz.key}"


def _age_under(limit: float, actual: Any, context: Context) -> tuple[bool, str]:
    moment = parse_timestamp(actual) if type(actual) is str else None
    if moment is None:
        return False, f"type mismatch: expected an RFC 3339 time, got {_type_name(actual)}"
    age = context.epoch - moment.timestamp()
    if age < -MAX_CLOCK_SKEW_SECONDS:
        return False, f"timestamp is {-age:.0f}s in the future"
    return age < limit, f"age {age:.0f}s"


def _exists(operand: None, actual: Any, context: Context) -> tuple[bool, str]:
    return True, ""


_CHECKS = {
    "equals": _equals,
    "not_equals": _not_equals,
    "in": _in,
    "not_in": _not_in,
    "matches": _search,
    "glob": _search,  # compiled to an anchored RE2 pattern at parse time
    "cidr_contains": _cidr_contains,
    "lt": _comparison(lambda a, b: a < b),
    "lte": _comparison(lambda a, b: a <= b),
    "gt": _comparison(lambda a, b: a > b),
    "gte": _comparison(lambda a, b: a >= b),
    "within_time_window": _within_time_window,
    "age_under": _age_under,
    "exists": _exists,
}


def runner(predicate: Predicate) -> Runner:
    """The function that runs ``predicate``, with the same outcome as ``run`` and fewer calls:
    for a fact under plain keys (every path without a list index), the walk and the operator
    inline, and for a string equality (most tests: hashes, regions, vendors) the comparison too.
    Anything unusual (a value on the path that is not an object, an operator that raises) is
    handed back to ``run``."""
    keys, operand, op = predicate.keys, predicate.operand, predicate.op
    if not all(type(key) is str for key in keys) or op == "within_time_window":
        return partial(run, predicate)
    check = _CHECKS[op]
    string_equality = op in ("equals", "not_equals") and operand[0] == "s"
    expected, negated = (operand[1], op == "not_equals") if string_equality else (None, False)

    def run_plain(context: Context) -> Outcome:
        value = context.facts
        for key in keys:
            if type(value) is not dict:
                return run(predicate, context)
            value = value.get(key)
            if value is None:
                return _MISSING_OUTCOME
        kind = type(value)
        if string_equality and kind is str and len(value) <= 256:
            return value, (value == expected) is not negated, ""
        try:
            result, note = check(operand, value, context)
        except Exception:
            return run(predicate, context)
        if not ((kind is str and len(value) <= 256) or kind is bool or kind is int or kind is float):
            value = _clip(value)  # a list of addresses, say: the trace keeps a small, detached copy
        return value, result is True or bool(result), note

    return run_plain
