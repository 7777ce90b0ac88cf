"""Explaining a decision: the fact tests a rule reached, which of them decided it, and their reasons in words.

Everything here reads outcomes already recorded by an evaluation (``policy.evaluate``); nothing
runs a test again. Each operator's words come from its entry in ``operator_registry.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, NamedTuple

from .conditions import AllOf, AnyOf, Condition, NotOf, Predicate
from .documents import Effect
from .operator_registry import REGISTRY
from .operators import MISSING_NOTE, UNTRUSTED_NOTE, Outcome


class ConditionTrace(NamedTuple):
    """One fact test as run; ``path`` locates it in its rule, e.g. ``when.all[1]``. ``provenance``
    is where the fact came from (None when absent), ``required`` the least the test accepted."""

    path: str
    fact: str
    op: str
    expected: Any
    actual: Any
    result: bool
    note: str
    provenance: str | None = None
    required: str = "claimed"


class RuleTrace(NamedTuple):
    policy: str
    version: int
    rule: str
    effect: Effect
    matched: bool
    conditions: tuple[ConditionTrace, ...]


def replay(node: Condition, outcomes: Mapping[str, Outcome], tested: list[Predicate]) -> bool:
    """``policy._holds`` over recorded outcomes, collecting the tests it reaches."""
    kind = type(node)
    if kind is Predicate:
        tested.append(node)
        return outcomes[node.signature][1]
    if kind is NotOf:
        return not replay(node.child, outcomes, tested)
    decisive = kind is AnyOf
    for child in node.children:
        if replay(child, outcomes, tested) is decisive:
            return decisive
    return not decisive


def _outcome(node: Condition, traces: dict[str, ConditionTrace]) -> bool | None:
    """The value a node took, rebuilt from its leaves' traces; None if it was never evaluated."""
    kind = type(node)
    if kind is Predicate:
        trace = traces.get(node.path)
        return None if trace is None else trace.result
    if kind is NotOf:
        inner = _outcome(node.child, traces)
        return None if inner is None else not inner
    decisive = kind is AnyOf  # any() is decided by a True child, all() by a False one
    seen = None
    for child in node.children:
        seen = _outcome(child, traces)
        if seen is None or seen is decisive:
            return seen
    return seen


def blame(node: Condition, traces: dict[str, ConditionTrace], outcome: bool) -> list[ConditionTrace]:
    """The evaluated fact tests that made ``node`` come out as ``outcome``."""
    kind = type(node)
    if kind is Predicate:
        trace = traces.get(node.path)
        return [] if trace is None else [trace]
    if kind is NotOf:
        return blame(node.child, traces, not outcome)
    every_child = (kind is AllOf) == outcome  # all() held, or any() failed: every child counts
    if every_child:
        return [t for child in node.children for t in blame(child, traces, outcome)]
    for child in node.children:
        if _outcome(child, traces) is outcome:
            return blame(child, traces, outcome)
    return []


def _short(value: Any, limit: int = 160) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe(trace: ConditionTrace) -> str:
    """A test for operators and the audit log: fact, actual value, the operator's phrase, expected value."""
    if trace.note == MISSING_NOTE:
        return f"{trace.fact} is missing"
    if trace.note == UNTRUSTED_NOTE:
        return _untrusted(trace)
    operator = REGISTRY[trace.op]
    phrase = operator.phrase[0 if trace.result else 1]
    # Where a test required a provenance, the reason says what the fact had.
    fact = trace.fact if trace.required == "claimed" else f"{trace.fact} ({trace.provenance})"
    if not operator.takes_value:
        return f"{fact} {phrase}"
    expected = operator.show(trace.expected) if operator.show is not None else _short(trace.expected)
    text = f"{fact} {_short(trace.actual)} {phrase} {expected}"
    return f"{text} ({trace.note})" if trace.note else text


def _untrusted(trace: ConditionTrace) -> str:
    return (f"{trace.fact} is only {trace.provenance}: the condition requires {trace.required} provenance, "
            f"so the {trace.provenance} value does not count")


def describe_for_agent(trace: ConditionTrace) -> str:
    """A test for the agent: the fact and the operator, never the policy's values."""
    if trace.note == MISSING_NOTE:
        return f"{trace.fact} is missing"
    if trace.note == UNTRUSTED_NOTE:
        return _untrusted(trace)  # names provenances only: nothing a forger could use
    return f"{trace.fact} {'passed' if trace.result else 'failed'} {trace.op}"
