"""Policies compiled from their documents: rules, targets and conditions, parsed once when saved.

Parsing is where every expensive or dangerous step happens once: each operator's ``parse``
(``operator_registry.py``) compiles its value, fact paths are split into keys, and the rules'
conditions are compiled into one program. The evaluator in ``policy.py`` then only reads these
compiled values. The document shape is in ``documents.py``, the facts a policy may test in
``facts.py``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal
from zoneinfo import ZoneInfo

from shared.provenance import Provenance, prefixes

from .conditions import AllOf, AnyOf, Condition, NotOf, Predicate
from .documents import (
    Approval,
    Disclosure,
    Effect,
    PolicyDoc,
    PolicyError,
    PredicateDoc,
    TargetsDoc,
)
from .documents import validate as _validate
from .facts import FACT_ROOTS
from .operator_registry import REGISTRY, REQUEST_TIME
from .program import Program, compile_program

MAX_POLICY_BYTES = 64 * 1024
MAX_DEPTH = 16
MAX_FACT_PATH = 256


@dataclass(frozen=True, slots=True)
class Rule:
    id: str
    description: str
    effect: Effect
    when: Condition
    approval: Approval | None


@dataclass(frozen=True, slots=True)
class Targets:
    devices: Literal["all"] | frozenset[str]
    device_groups: frozenset[str]
    keys: Literal["all"] | frozenset[str]
    key_groups: frozenset[str]


@dataclass(frozen=True, slots=True)
class Policy:
    id: str
    version: int
    name: str
    description: str
    targets: Targets
    disclose: Disclosure
    timezone: str
    minimum_provenance: Provenance
    tz: ZoneInfo = field(repr=False, compare=False)
    rules: tuple[Rule, ...]
    program: Program = field(repr=False, compare=False)  # the rules' conditions, compiled for evaluation


def parse_policy_json(raw: str | bytes, *, policy_id: str, version: int) -> Policy:
    """Parse a policy as posted; the size limit is checked before JSON decoding."""
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError("", f"policy is larger than {MAX_POLICY_BYTES} bytes")
    try:
        doc = json.loads(raw)
    except (ValueError, RecursionError) as exc:
        raise PolicyError("", f"not valid JSON: {exc}") from None
    return parse_policy(doc, policy_id=policy_id, version=version)


def parse_policy(doc: Mapping[str, Any], *, policy_id: str, version: int) -> Policy:
    """Validate a policy document and compile it; raises PolicyError naming the offending field."""
    if not isinstance(doc, Mapping):
        raise PolicyError("", "a policy must be a JSON object")
    try:
        size = len(json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode())
    except RecursionError:
        raise PolicyError("", f"conditions nest deeper than {MAX_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:
        raise PolicyError("", f"not JSON: {exc}") from None
    if size > MAX_POLICY_BYTES:
        raise PolicyError("", f"policy is {size} bytes; the limit is {MAX_POLICY_BYTES}")
    parsed = _validate(PolicyDoc, doc, "")

    rules: list[Rule] = []
    first_use: dict[str, int] = {}
    for index, rule in enumerate(parsed.rules):
        where = f"rules[{index}]"
        if rule.id in first_use:
            first = first_use[rule.id]
            raise PolicyError(f"{where}.id", f"duplicate rule id {rule.id!r} (also rules[{first}])")
        first_use[rule.id] = index
        approval = rule.approval
        if rule.effect == "require_approval":
            approval = approval or Approval()
        elif approval is not None:
            raise PolicyError(f"{where}.approval", "approval applies only to require_approval rules")
        when = _compile_condition(rule.when, where, "when", 1, (parsed.timezone, parsed.minimum_provenance))
        rules.append(Rule(rule.id, rule.description, rule.effect, when, approval))

    return Policy(
        id=policy_id,
        version=version,
        name=parsed.name,
        description=parsed.description,
        targets=_compile_targets(parsed.targets),
        disclose=parsed.disclose,
        timezone=parsed.timezone,
        minimum_provenance=parsed.minimum_provenance,
        tz=ZoneInfo(parsed.timezone),
        rules=tuple(rules),
        program=compile_program([rule.when for rule in rules]),
    )


def _compile_targets(doc: TargetsDoc) -> Targets:
    if doc.devices == [] and not doc.device_groups:
        raise PolicyError("targets.devices", 'targets no device: give "all", device ids or device_groups')
    if doc.keys == [] and not doc.key_groups:
        raise PolicyError("targets.keys", 'targets no key: give "all", key ids or key_groups')
    return Targets(
        devices="all" if doc.devices == "all" else frozenset(doc.devices),
        device_groups=frozenset(doc.device_groups),
        keys="all" if doc.keys == "all" else frozenset(doc.keys),
        key_groups=frozenset(doc.key_groups),
    )


def parse_condition(node: Any, *, path: str = "match", zone: str = "UTC") -> Condition:
    """A standalone condition (a dynamic group's membership test); errors name ``path``-relative fields."""
    return _compile_condition(node, "", path, 1, (zone, "claimed"))


_Scope = tuple[str, Provenance]  # the policy's time zone and minimum provenance


def _compile_condition(node: Any, rule_path: str, path: str, depth: int, scope: _Scope) -> Condition:
    where = f"{rule_path}.{path}" if rule_path else path
    if depth > MAX_DEPTH:
        raise PolicyError(where, f"conditions nest deeper than {MAX_DEPTH} levels")
    if not isinstance(node, Mapping):
        raise PolicyError(where, "a condition must be an object")
    combinators = node.keys() & {"all", "any", "not"}
    if not combinators:
        return _compile_predicate(node, rule_path, path, scope)
    if len(node) != 1:
        raise PolicyError(where, 'a condition is exactly one of "all", "any", "not", or a fact test')
    (kind, body), = node.items()
    if kind == "not":
        return NotOf(path, _compile_condition(body, rule_path, f"{path}.not", depth + 1, scope))
    if not isinstance(body, list) or not body:
        # An empty "all" would be vacuously true: an allow rule matching everything.
        raise PolicyError(f"{where}.{kind}", "must be a non-empty list of conditions")
    children = tuple(
        _compile_condition(child, rule_path, f"{path}.{kind}[{i}]", depth + 1, scope)
        for i, child in enumerate(body)
    )
    return AllOf(path, children) if kind == "all" else AnyOf(path, children)


def _compile_predicate(node: Mapping[str, Any], rule_path: str, path: str, scope: _Scope) -> Predicate:
    zone, minimum = scope
    where = f"{rule_path}.{path}" if rule_path else path
    doc = _validate(PredicateDoc, node, where)
    operator = REGISTRY.get(doc.op)
    if operator is None:
        known = ", ".join(REGISTRY)
        raise PolicyError(f"{where}.op", f"unknown operator {doc.op!r}; expected one of {known}")
    fact = doc.fact
    if operator.reads_clock:
        fact = fact or REQUEST_TIME
        if fact != REQUEST_TIME:
            raise PolicyError(f"{where}.fact", f"{doc.op} tests {REQUEST_TIME} only")
    elif fact is None:
        raise PolicyError(f"{where}.fact", "required field is missing")
    keys = _parse_fact_path(fact, f"{where}.fact")
    has_value = "value" in doc.model_fields_set
    if not operator.takes_value:
        if has_value:
            raise PolicyError(f"{where}.value", f"{doc.op} takes no value")
    elif not has_value or doc.value is None:
        hint = "; use exists to test presence" if has_value else ""
        raise PolicyError(f"{where}.value", f"{doc.op} needs a value{hint}")
    operand = operator.parse(doc.value, f"{where}.value")
    required = doc.provenance or minimum
    # The requirement is part of the test: the same fact test under two requirements is two tests.
    signature = json.dumps([fact, doc.op, doc.value, zone if operator.reads_clock else None]
                           + ([required] if required != "claimed" else []))
    return Predicate(path, fact, keys, doc.op, doc.value, operand, required, prefixes(keys), signature)


_FACT_HEAD = re.compile(r"[A-Za-z0-9_-]+")
_FACT_STEP = re.compile(r'\.([A-Za-z0-9_-]+)|\[(\d{1,6}|"(?:[^"\\]|\\.)*")\]')


def _parse_fact_path(fact: str, where: str) -> tuple[str | int, ...]:
    if not fact or len(fact) > MAX_FACT_PATH:
        raise PolicyError(where, f"a fact path is 1 to {MAX_FACT_PATH} characters")
    head = _FACT_HEAD.match(fact)
    if not head or head.group() not in FACT_ROOTS:
        raise PolicyError(where, f"a fact path starts with one of {', '.join(FACT_ROOTS)}")
    keys: list[str | int] = [head.group()]
    pos = head.end()
    while pos < len(fact):
        step = _FACT_STEP.match(fact, pos)
        if not step:
            raise PolicyError(where, f'bad fact path at character {pos}: use a.b, a["key.with.dots"] or a[0]')
        name, index = step.groups()
        if name is not None:
            keys.append(name)
        elif index.startswith('"'):
            try:
                keys.append(json.loads(index))
            except ValueError:
                raise PolicyError(where, f"bad quoted key {index}") from None
        else:
            keys.append(int(index))
        pos = step.end()
    if len(keys) < 2:
        raise PolicyError(where, f"name a fact inside {keys[0]}, e.g. {keys[0]}.<name>")
    return tuple(keys)
