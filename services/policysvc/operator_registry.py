"""The policy operators, one record each: everything about a fact test is declared in its entry.

An entry says how the policy's value is compiled (``parse``, once, when the policy is saved), how
a fact is checked against it (``check``, at every decision, with an optional ``inline`` fast path
for the compiled program) and how an outcome reads in a reason (``phrase``). The parser accepts
exactly the names in ``REGISTRY``; the evaluator, the compiled program and the explanations look
operators up there. Adding an operator is adding an entry (and its tests).

``parse`` does every expensive or dangerous step once: regexes are compiled with RE2 (linear
time), CIDRs and time windows are parsed, comparison operands are classified. ``check`` only reads
those compiled values, and may raise on a malformed fact: the evaluator turns that into a false
test with a note, so nothing in a facts document makes a decision raise.
"""

from __future__ import annotations

import ipaddress
import math
import operator as compare
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import re2

from .documents import PolicyError, TimeWindowDoc, validate
from .operands import (
    DAY_NAMES,
    MAX_MATCH_INPUT,
    Comparable,
    Network,
    TimeWindow,
    address_forms,
    glob_to_regex,
    json_key,
    parse_timestamp,
    parse_version,
    type_name,
)

if TYPE_CHECKING:
    from .operators import Context

MAX_PATTERN_LENGTH = 512
REGEX_MAX_MEM = 1 << 20  # RE2 program memory cap; a hostile pattern fails to compile instead
MAX_CLOCK_SKEW_SECONDS = 300.0  # age_under tolerates agent clocks this far ahead of ours
REQUEST_TIME = "observed.request_time"

Check = Callable[[Any, Any, "Context"], tuple[Any, str]]


@dataclass(frozen=True, slots=True)
class Operator:
    """One fact test, ``{"fact": ..., "op": name, "value": ...}``."""

    name: str
    # (value as written, its JSON path) -> the compiled operand; raises PolicyError naming the path.
    parse: Callable[[Any, str], Any]
    # (compiled operand, the fact's value, context) -> (truthy result, note); may raise on odd facts.
    check: Check
    phrase: tuple[str, str]  # reads between the fact and the value when the test holds, and when not
    show: Callable[[Any], str] | None = None  # the value as a reason quotes it; None: its repr, clipped
    takes_value: bool = True  # False: "value" is refused, and a reason reads "<fact> <phrase>"
    # For a string fact: the string it is compared with and whether the result is negated, so the
    # compiled program compares inline instead of calling ``check`` (same outcome); None: no fast path.
    inline: Callable[[Any], tuple[str, bool] | None] | None = None
    # Tests observed.request_time (its default fact, and the only one allowed) in the policy's time
    # zone, which joins the test's signature; if the fact is missing, the evaluation time stands in.
    reads_clock: bool = False


# --- parsing operands ---

def _parse_nothing(value: Any, where: str) -> None:
    return None


def _parse_json(value: Any, where: str) -> tuple:
    return json_key(value)


def _parse_members(name: str, value: Any, where: str) -> frozenset:
    if not isinstance(value, list) or not value:
        raise PolicyError(where, f"{name} needs a non-empty list")
    return frozenset(json_key(item) for item in value)


def _pattern_text(value: Any, where: str) -> str:
    if not isinstance(value, str) or not value:
        raise PolicyError(where, "a pattern must be a non-empty string")
    if len(value) > MAX_PATTERN_LENGTH:
        raise PolicyError(where, f"pattern is longer than {MAX_PATTERN_LENGTH} characters")
    return value


def _compile_regex(pattern: str, where: str) -> Any:
    options = re2.Options()
    options.log_errors = False
    options.max_mem = REGEX_MAX_MEM
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        reason = exc.args[0] if exc.args else ""
        detail = reason.decode(errors="replace") if isinstance(reason, bytes) else str(reason)
        raise PolicyError(where, f"invalid regular expression: {detail}") from None


def _parse_regex(value: Any, where: str) -> Any:
    return _compile_regex(_pattern_text(value, where), where)


def _parse_glob(value: Any, where: str) -> Any:
    return _compile_regex(glob_to_regex(_pattern_text(value, where)), where)


def _parse_networks(value: Any, where: str) -> tuple[Network, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PolicyError(where, "cidr_contains needs a CIDR or a non-empty list of CIDRs")
    networks = []
    for index, item in enumerate(items):
        item_where = f"{where}[{index}]" if isinstance(value, list) else where
        if not isinstance(item, str):
            raise PolicyError(item_where, "a CIDR must be a string such as 10.0.0.0/8 or 2001:db8::/32")
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError as exc:
            raise PolicyError(item_where, f"invalid CIDR {item!r}: {exc}") from None
        networks.append(Network(network.version, int(network.network_address), int(network.netmask), item))
    return tuple(networks)


def _parse_comparable(name: str, value: Any, where: str) -> Comparable:
    if type(value) in (int, float) and math.isfinite(value):
        return Comparable("number", value)
    if isinstance(value, str):
        moment = parse_timestamp(value)
        if moment is not None:
            return Comparable("time", moment)
        version = parse_version(value)
        if version is not None:
            return Comparable("version", version)
    raise PolicyError(where, f"{name} needs a number, a version such as \"1.10.0\" or an RFC 3339 time")


def _parse_window(value: Any, where: str) -> TimeWindow:
    doc = validate(TimeWindowDoc, value, where)
    days = set()
    for index, name in enumerate(doc.days):
        if name.lower() not in DAY_NAMES:
            raise PolicyError(f"{where}.days[{index}]", f"unknown day {name!r}; use {', '.join(DAY_NAMES)}")
        days.add(DAY_NAMES.index(name.lower()))
    if not days:
        raise PolicyError(f"{where}.days", "a time window needs at least one day")
    start = _minutes(doc.from_, f"{where}.from", allow_end_of_day=False)
    end = _minutes(doc.to, f"{where}.to", allow_end_of_day=True)
    if start == end:
        raise PolicyError(f"{where}.to", "a time window cannot start and end at the same time")
    return TimeWindow(frozenset(days), start, end)


def _minutes(text: str, where: str, *, allow_end_of_day: bool) -> int:
    found = re.fullmatch(r"(\d{2}):(\d{2})", text)
    if found:
        hours, minutes = int(found.group(1)), int(found.group(2))
        if hours < 24 and minutes < 60:
            return hours * 60 + minutes
        if allow_end_of_day and (hours, minutes) == (24, 0):
            return 1440
    raise PolicyError(where, f"expected a time HH:MM, got {text!r}")


def _parse_seconds(value: Any, where: str) -> float:
    if type(value) not in (int, float) or not math.isfinite(value) or value <= 0:
        raise PolicyError(where, "age_under needs a positive number of seconds")
    return float(value)


# --- checking facts ---

def _equals(expected: tuple, actual: Any, context: Context) -> tuple[bool, str]:
    if type(actual) is str and expected[0] == "s":  # most tests compare strings: no key to build
        return actual == expected[1], ""
    got = json_key(actual)
    if got == expected:
        return True, ""
    return False, "" if got[0] == expected[0] else f"type differs: got {type_name(actual)}"


def _not_equals(expected: tuple, actual: Any, context: Context) -> tuple[bool, str]:
    result, note = _equals(expected, actual, context)
    return not result, note


def _in(members: frozenset, actual: Any, context: Context) -> tuple[bool, str]:
    return (("s", actual) if type(actual) is str else json_key(actual)) in members, ""


def _not_in(members: frozenset, actual: Any, context: Context) -> tuple[bool, str]:
    return (("s", actual) if type(actual) is str else json_key(actual)) not in members, ""


def _search(pattern: Any, actual: Any, context: Context) -> tuple[bool, str]:
    if type(actual) is not str:
        return False, f"type mismatch: expected a string, got {type_name(actual)}"
    if len(actual) > MAX_MATCH_INPUT:
        return False, f"input longer than {MAX_MATCH_INPUT} characters"
    return pattern.search(actual) is not None, ""


def _cidr_contains(networks: tuple[Network, ...], actual: Any, context: Context) -> tuple[bool, str]:
    """True when any of the fact's addresses lies in any of the networks."""
    candidates = actual if type(actual) is list else [actual]
    unreadable = 0
    for candidate in candidates:
        forms = address_forms(candidate) if type(candidate) is str else None
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


_ARTICLES = {"number": "a number", "version": "a version", "time": "an RFC 3339 time"}


def _read_ordered(kind: str, actual: Any) -> Any:
    if kind == "number":
        return actual if type(actual) in (int, float) else None
    if type(actual) is not str:
        return None
    return parse_version(actual) if kind == "version" else parse_timestamp(actual)


def _ordered(holds: Callable[[Any, Any], bool]) -> Check:
    def check(expected: Comparable, actual: Any, context: Context) -> tuple[bool, str]:
        got = _read_ordered(expected.kind, actual)
        if got is None:
            return False, f"type mismatch: expected {_ARTICLES[expected.kind]}, got {type_name(actual)}"
        return holds(got, expected.key), ""

    return check


def _within_time_window(window: TimeWindow, actual: Any, context: Context) -> tuple[bool, str]:
    moment = parse_timestamp(actual) if type(actual) is str else None
    if moment is None:
        return False, f"type mismatch: expected an RFC 3339 time, got {type_name(actual)}"
    local = moment.astimezone(context.tz)
    return window.contains(local), f"local time {DAY_NAMES[local.weekday()]} {local:%H:%M} {context.tz.key}"


def _age_under(limit: float, actual: Any, context: Context) -> tuple[bool, str]:
    moment = parse_timestamp(actual) if type(actual) is str else None
    if moment is None:
        return False, f"type mismatch: expected an RFC 3339 time, got {type_name(actual)}"
    age = context.epoch - moment.timestamp()
    if age < -MAX_CLOCK_SKEW_SECONDS:
        return False, f"timestamp is {-age:.0f}s in the future"
    return age < limit, f"age {age:.0f}s"


def _exists(operand: None, actual: Any, context: Context) -> tuple[bool, str]:
    return True, ""  # reached only for a present fact: a missing one fails before any check


def _equal_string(operand: tuple) -> tuple[str, bool] | None:
    return (operand[1], False) if operand[0] == "s" else None


def _unequal_string(operand: tuple) -> tuple[str, bool] | None:
    return (operand[1], True) if operand[0] == "s" else None


def _show_window(window: Mapping[str, Any]) -> str:
    return f"{','.join(window.get('days', ['every day']))} {window['from']}-{window['to']}"


def _show_seconds(seconds: Any) -> str:
    return f"{seconds}s"


# --- the registry: one entry per operator, in the order error messages list them ---

_ENTRIES = (
    Operator("equals", _parse_json, _equals, ("==", "!="), inline=_equal_string),
    Operator("not_equals", _parse_json, _not_equals, ("!=", "=="), inline=_unequal_string),
    Operator("in", partial(_parse_members, "in"), _in, ("in", "not in")),
    Operator("not_in", partial(_parse_members, "not_in"), _not_in, ("not in", "in")),
    Operator("matches", _parse_regex, _search, ("matches", "does not match")),
    # compiled to an anchored RE2 pattern, so checked as a regex is
    Operator("glob", _parse_glob, _search, ("matches glob", "does not match glob")),
    Operator("cidr_contains", _parse_networks, _cidr_contains, ("in", "not in")),
    Operator("lt", partial(_parse_comparable, "lt"), _ordered(compare.lt), ("<", "is not <")),
    Operator("lte", partial(_parse_comparable, "lte"), _ordered(compare.le), ("<=", "is not <=")),
    Operator("gt", partial(_parse_comparable, "gt"), _ordered(compare.gt), (">", "is not >")),
    Operator("gte", partial(_parse_comparable, "gte"), _ordered(compare.ge), (">=", "is not >=")),
    Operator("within_time_window", _parse_window, _within_time_window, ("within", "outside"),
             show=_show_window, reads_clock=True),
    Operator("age_under", _parse_seconds, _age_under, ("is younger than", "is not younger than"),
             show=_show_seconds),
    Operator("exists", _parse_nothing, _exists, ("exists", "does not exist"), takes_value=False),
)

REGISTRY: Mapping[str, Operator] = {entry.name: entry for entry in _ENTRIES}
