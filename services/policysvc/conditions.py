"""Compiled conditions: the tree a rule's ``when`` (or a dynamic group's ``match``) parses into.

``path`` locates a node in its rule, e.g. ``when.all[1]``, for traces and error messages.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class Predicate:
    path: str  # where it sits in its rule, e.g. "when.all[0]"
    fact: str
    keys: tuple[str | int, ...]
    op: str
    value: Any  # as the operator wrote it
    operand: Any  # compiled form of value
    required: str  # the least provenance the fact must have ("claimed": any)
    prefixes: tuple[str, ...]  # canonical paths of the fact and its ancestors (shared.provenance.prefixes)
    # Equal signatures compute equal results within one evaluation, so the evaluator runs each once.
    signature: str = field(repr=False, compare=False)


@dataclass(frozen=True, slots=True)
class AllOf:
    path: str
    children: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class AnyOf:
    path: str
    children: tuple[Condition, ...]


@dataclass(frozen=True, slots=True)
class NotOf:
    path: str
    child: Condition


Condition = AllOf | AnyOf | NotOf | Predicate
