"""Running fact tests: how a test reads its fact and hands it to its operator (``operator_registry``).

Each test runs at most once per evaluation and yields an ``Outcome``: the actual value as the trace
shows it (clipped, detached from the caller's facts), the result, a note and the fact's provenance
(``shared/provenance.py``). A fact weaker than its test requires counts as absent: the test is
false, whatever the value, and the note says so. Nothing here raises on
a facts document, however malformed: an unreadable fact makes its test false and the note says why.

``runner`` gives the function a compiled policy calls for one test: the general ``run`` with the
common case (a string fact under plain keys, compared for equality) taken without its layers.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from datetime import datetime
from functools import partial
from typing import Any

from shared.provenance import GATEWAY_OBSERVED, RANK, WEAKEST, lookup

from .conditions import Predicate
from .operator_registry import REGISTRY, REQUEST_TIME

MISSING_TEXT = "<missing>"
MISSING_NOTE = "fact not present"
_NOW_NOTE = f"{REQUEST_TIME} missing; used evaluation time"
UNTRUSTED_NOTE = "provenance below the requirement"
_MISSING_OUTCOME = (MISSING_TEXT, False, MISSING_NOTE, None)
_MISSING = object()

Outcome = tuple[Any, bool, str, str | None]  # (actual value as traced, result, note, provenance of the fact)
Runner = Callable[["Context"], Outcome]


class Context:
    """What one evaluation reads besides the tests: the facts and their provenance, the clock and
    the policy's time zone."""

    __slots__ = ("epoch", "facts", "now", "outcomes", "provenance", "tz")

    def __init__(self, facts: Any, now: datetime, provenance: Mapping[str, str] | None = None) -> None:
        self.facts = facts
        self.provenance = GATEWAY_OBSERVED if provenance is None else provenance
        self.now = now
        self.epoch = now.timestamp()
        self.tz: Any = None  # of the policy being evaluated
        self.outcomes: dict[str, Outcome] = {}  # Predicate.signature -> outcome


def run(predicate: Predicate, context: Context) -> Outcome:
    actual = _resolve(context.facts, predicate.keys)
    if actual is _MISSING:
        if not REGISTRY[predicate.op].reads_clock:
            return _MISSING_OUTCOME
        actual = context.now.isoformat()  # the gateway always sets it; without it, use our clock
        result, note = _check(predicate, actual, context)
        return actual, result, f"{_NOW_NOTE}; {note}", "observed"
    provenance = lookup(context.provenance, predicate.prefixes)
    kind = type(actual)
    shown = actual if kind is bool or kind is int or kind is float or (kind is str and len(actual) <= 256) \
        else _clip(actual)
    if RANK[provenance] < RANK[predicate.required]:
        # SECURITY: a fact weaker than the test requires (a claim where cloud evidence is needed)
        # never satisfies it, whatever its value.
        return shown, False, UNTRUSTED_NOTE, provenance
    result, note = _check(predicate, actual, context)
    return shown, result, note, provenance


def _check(predicate: Predicate, actual: Any, context: Context) -> tuple[bool, str]:
    try:
        result, note = REGISTRY[predicate.op].check(predicate.operand, actual, context)
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


def runner(predicate: Predicate) -> Runner:
    """The function that runs ``predicate``, with the same outcome as ``run`` and fewer calls:
    for a fact under plain keys (every path without a list index), the walk and the operator
    inline, and where the operator has an ``inline`` form (string equality: most tests, such as
    hashes, regions, vendors) the comparison too.
    Anything unusual (a value on the path that is not an object, an operator that raises) is
    handed back to ``run``."""
    keys, operand, operator = predicate.keys, predicate.operand, REGISTRY[predicate.op]
    if not all(type(key) is str for key in keys) or operator.reads_clock or predicate.required != "claimed":
        return partial(run, predicate)
    paths = predicate.prefixes
    check = operator.check
    inline = operator.inline(operand) if operator.inline is not None else None
    string_equality = inline is not None
    expected, negated = inline if inline is not None else (None, False)

    def run_plain(context: Context) -> Outcome:
        value = context.facts
        for key in keys:
            if type(value) is not dict:
                return run(predicate, context)
            value = value.get(key)
            if value is None:
                return _MISSING_OUTCOME
        known = context.provenance  # shared.provenance.lookup, inline: this is the evaluator's hot path
        for path in paths:
            provenance = known.get(path)
            if provenance is not None:
                break
        else:
            provenance = WEAKEST
        kind = type(value)
        if string_equality and kind is str and len(value) <= 256:
            return value, (value == expected) is not negated, "", provenance
        try:
            result, note = check(operand, value, context)
        except Exception:
            return run(predicate, context)
        if not ((kind is str and len(value) <= 256) or kind is bool or kind is int or kind is float):
            value = _clip(value)  # a list of addresses, say: the trace keeps a small, detached copy
        return value, result is True or bool(result), note, provenance

    return run_plain
