"""A policy's rules compiled into one Python function, so that deciding costs a few bytecodes per test.

Walking condition trees node by node (``policy._holds``) spends most of a decision on the walk:
fifty rules over forty facts visit some 250 nodes, most of them tests already run for an earlier
rule. Compiled, each distinct fact test becomes a local variable that is filled the first time a
rule reaches it, and ``all``/``any``/``not`` become Python's ``and``/``or``/``not``, which
short-circuit exactly as the interpreter does. So the same tests run, in the same order, with the
same results; ``tests/unit/test_policy_program.py`` checks this against the interpreter on
generated policies and facts.

The generated source is built only from integer indexes and fixed tokens: no text from a policy
document (fact names, values, rule ids) ever reaches ``compile``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

from .conditions import AllOf, AnyOf, Condition, NotOf, Predicate
from .operators import Runner, runner

Tester = Callable[[int], bool]  # runs test i of the program (or recalls its outcome) and returns its result


@dataclass(frozen=True, slots=True)
class Program:
    """``run(test)`` gives each rule's result, in rule order, calling ``test(i)`` at most once per
    distinct test, ``tests[i]``, and only for the tests the short-circuits reach."""

    tests: tuple[Predicate, ...]  # distinct by signature, in the order rules first use them
    signatures: tuple[str, ...]  # of tests[i]: equal signatures compute equal outcomes
    runners: tuple[Runner, ...]  # runs tests[i] against a context (operators.runner)
    run: Callable[[Tester], tuple[bool, ...]]


def compile_program(conditions: Sequence[Condition]) -> Program:
    """Compile the ``when`` conditions of a policy's rules, in rule order."""
    index: dict[str, int] = {}
    tests: list[Predicate] = []

    def emit(node: Condition) -> str:
        kind = type(node)
        if kind is Predicate:
            i = index.get(node.signature)
            if i is None:
                i = index[node.signature] = len(tests)
                tests.append(node)
            return f"(t{i} if t{i} is not None else (t{i} := test({i})))"
        if kind is NotOf:
            return f"(not {emit(node.child)})"
        joiner = " and " if kind is AllOf else " or "
        assert kind is AnyOf or kind is AllOf, kind
        return "(" + joiner.join(emit(child) for child in node.children) + ")"

    results = [emit(condition) for condition in conditions]
    names = " = ".join(f"t{i}" for i in range(len(tests)))
    source = "def run(test):\n"
    if tests:
        source += f"    {names} = None\n"
    source += "    return (" + "".join(f"\n        {result}," for result in results) + "\n    )\n"
    namespace: dict[str, object] = {}
    exec(compile(source, "<policy program>", "exec"), {"__builtins__": {}}, namespace)
    return Program(tuple(tests), tuple(test.signature for test in tests), tuple(runner(test) for test in tests),
                   namespace["run"])  # type: ignore[arg-type]
