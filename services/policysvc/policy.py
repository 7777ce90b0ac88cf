"""Policy evaluation: compiled policies and a facts document in, a decision with its reasons out.

Pure and deterministic: the clock is the ``now`` argument, and nothing in a facts document, however
malformed, raises; a fact that cannot be read makes its condition false and the trace says why.

Semantics:
  * every rule of every policy given is evaluated, so rule order never changes a decision;
  * ``all``/``any`` stop at the first decisive child; a trace lists the tests actually run;
  * a missing (absent or null) fact makes its test false, so ``not`` of it is true;
  * so does a fact weaker than its test's required provenance (``shared/provenance.py``): a claimed
    region never satisfies a test that requires a cloud-signed one;
  * deny beats require_approval beats allow, across policies too; if no rule matches, deny.

Each distinct fact test runs once per evaluation (rules often repeat a baseline check), and the
trace and reasons are built from those outcomes only when read. ``evaluate`` runs each policy's
compiled program (``program.py``); ``holds`` (dynamic groups) and the explanations walk the
condition tree (``_holds``, ``explain.replay``), and the two are tested to agree.

A decision travels in two sizes. ``compact_trace`` (in the ``key.decided`` event and so in the
audit log) names the rule that decided it; for a deny or an approval, every deciding rule and the
conditions that made it so (fact, operator, expected, actual). ``record()`` is the full trace in
canonical form: every policy version and rule evaluated, whether each matched, and every fact
test run with its expected and actual value, each test once. policysvc keeps it with the
decision; the event carries its SHA-256 (``record_digest``), so the audit log commits to it;
``from_record`` rebuilds the decision from it and the same policy versions, to show the per-rule
trace again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from functools import cached_property
from typing import Any, NamedTuple
from zoneinfo import ZoneInfo

from .conditions import AnyOf, Condition, NotOf, Predicate
from .documents import Approval, Disclosure, Effect
from .explain import ConditionTrace, RuleTrace, blame, describe, describe_for_agent, replay
from .operators import Context, Outcome, run
from .program import Program
from .rules import Policy, Rule

DISCLOSURE_LEVELS: tuple[Disclosure, ...] = ("none", "reasons", "full")  # least revealing first
RECORD_FORMAT = 2  # of Decision.record(); bump when its shape changes (2: each test gives its fact's provenance)
_PRECEDENCE: tuple[Effect, ...] = ("deny", "require_approval", "allow")
_UTC = ZoneInfo("UTC")


class RuleRef(NamedTuple):
    policy: str
    version: int
    rule: str


@dataclass(frozen=True, eq=False)
class Decision:
    """The outcome of one evaluation, with everything an audit record or an operator needs.

    ``trace`` covers every rule evaluated; ``compact_trace`` and ``record()`` are the forms that
    travel and are kept (see the module docstring). ``reasons`` quote expected and actual values,
    for operators and the audit log. ``agent_reasons`` name only the rule, the fact and the operator:
    the agent learns what to fix but not the policy's values (allowed CIDRs, hashes, versions),
    which would tell a forger what to claim.
    """

    effect: Effect
    approval: Approval | None
    disclose: Disclosure  # the most restrictive level among the policies evaluated
    _deciding: tuple[tuple[Policy, Rule], ...] = field(repr=False)  # the rules whose effect won
    _policies: tuple[Policy, ...] = field(repr=False)
    _matched: tuple[bool, ...] = field(repr=False)  # one per rule, in policy and rule order
    _outcomes: Mapping[str, Outcome] = field(repr=False)  # by Predicate.signature

    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Decision):
            return NotImplemented
        return (self.effect, self.decided_by, self.approval, self.disclose, self.trace) == (
            other.effect, other.decided_by, other.approval, other.disclose, other.trace)

    @cached_property
    def decided_by(self) -> tuple[RuleRef, ...]:
        return tuple(RuleRef(policy.id, policy.version, rule.id) for policy, rule in self._deciding)

    @cached_property
    def trace(self) -> tuple[RuleTrace, ...]:
        return tuple(trace for _, _, trace in self._rule_traces)

    @cached_property
    def reasons(self) -> tuple[str, ...]:
        return self._render(describe)

    @cached_property
    def agent_reasons(self) -> tuple[str, ...]:
        return self._render(describe_for_agent)

    def disclosed(self, level: Disclosure | None = None) -> dict[str, Any]:
        """What an agent may be told: "none" the effect only; "reasons" adds ``agent_reasons``
        and the approval terms; "full" adds ``decided_by``, the operator reasons and the trace.
        Without a level, the decision's own ``disclose``."""
        level = level or self.disclose
        if level not in DISCLOSURE_LEVELS:
            raise ValueError(f"unknown disclosure level {level!r}")
        shown: dict[str, Any] = {"effect": self.effect}
        if level == "none":
            return shown
        if self.approval is not None:
            shown["approval"] = self.approval.model_dump()
        if level == "reasons":
            shown["reasons"] = list(self.agent_reasons)
            return shown
        shown["decided_by"] = [ref._asdict() for ref in self.decided_by]
        shown["reasons"] = list(self.reasons)
        shown["trace"] = [
            {**rule._asdict(), "conditions": [c._asdict() for c in rule.conditions]} for rule in self.trace
        ]
        return shown

    @cached_property
    def _rule_traces(self) -> tuple[tuple[Policy, Rule, RuleTrace], ...]:
        """Replays each rule against the recorded outcomes: the same short-circuits, the same tests."""
        matched = iter(self._matched)
        return tuple(
            (policy, rule, self._replay_rule(policy, rule, next(matched), []))
            for policy in self._policies for rule in policy.rules
        )

    @cached_property
    def _relevant(self) -> tuple[tuple[Policy, Rule, RuleTrace, list[tuple[ConditionTrace, str]]], ...]:
        """The rules that explain the effect, each with the fact tests (and their signatures) that
        made it come out so: the deciding rules or, when denied by default, every allow and
        require_approval rule. An allow is explained by its first allowing rule: one suffices, and
        ``decided_by`` names the rest. Only these rules are replayed, not every rule evaluated."""
        by_default = not self._deciding
        witness = self._deciding[0][1] if self.effect == "allow" and self._deciding else None
        explained = []
        matched = iter(self._matched)
        for policy in self._policies:
            for rule in policy.rules:
                hit = next(matched)
                if witness is not None:
                    relevant = rule is witness
                else:
                    relevant = rule.effect != "deny" if by_default else hit and rule.effect == self.effect
                if not relevant:
                    continue
                tested: list[Predicate] = []
                trace = self._replay_rule(policy, rule, hit, tested)
                signatures = {p.path: p.signature for p in tested}
                blamed = blame(rule.when, {c.path: c for c in trace.conditions}, hit)
                explained.append((policy, rule, trace, [(c, signatures[c.path]) for c in blamed]))
        return tuple(explained)

    def _replay_rule(self, policy: Policy, rule: Rule, matched: bool, tested: list[Predicate]) -> RuleTrace:
        replay(rule.when, self._outcomes, tested)
        conditions = tuple(
            ConditionTrace(p.path, p.fact, p.op, p.value, *self._outcomes[p.signature], p.required) for p in tested
        )
        return RuleTrace(policy.id, policy.version, rule.id, rule.effect, matched, conditions)

    @cached_property
    def fact_provenance(self) -> dict[str, str | None]:
        """Each fact a test read, as the policy named it, with its provenance (None: absent)."""
        return {json.loads(signature)[0]: outcome[3] for signature, outcome in self._outcomes.items()}

    @cached_property
    def compact_trace(self) -> tuple[dict[str, Any], ...]:
        """What the audit record keeps of the trace: the rules that explain the effect and, for a
        deny or an approval, the conditions that decided it. An allow needs only the rule its reasons
        explain (``decided_by`` names every allowing rule; the full record has every value)."""
        if self.effect == "allow":  # no replay: the allowing rule is known without one
            return tuple({"policy": policy.id, "version": policy.version, "rule": rule.id, "effect": rule.effect,
                          "matched": True} for policy, rule in self._deciding[:1])
        return tuple(
            {"policy": trace.policy, "version": trace.version, "rule": trace.rule, "effect": trace.effect,
             "matched": trace.matched,
             "conditions": [{"path": c.path, "fact": c.fact, "op": c.op, "expected": c.expected, "actual": c.actual,
                             "result": c.result, "note": c.note, "provenance": c.provenance,
                             "required": c.required} for c, _ in blamed]}
            for _, _, trace, blamed in self._relevant
        )

    def record(self, now: datetime) -> str:
        """The full trace in canonical form (sorted keys, no spaces): every policy version and rule
        evaluated with whether it matched, and every fact test run as ``signature -> [actual,
        result, note, provenance]`` (the signature is the test itself: fact, operator, expected,
        time zone and, when the test requires one, the least provenance)."""
        matched = iter(self._matched)
        document = {
            "format": RECORD_FORMAT,
            "evaluated_at": now.isoformat(),
            "effect": self.effect,
            "policies": [
                {"policy": p.id, "version": p.version, "rules": [[r.id, next(matched)] for r in p.rules]}
                for p in self._policies
            ],
            "tests": self._outcomes,
        }
        return json.dumps(document, sort_keys=True, separators=(",", ":"), default=str)

    @classmethod
    def from_record(cls, text: str, policies: Sequence[Policy]) -> Decision:
        """The decision a ``record()`` was taken from, given the same policy versions (in the
        record's order); its ``trace`` and ``reasons`` are the ones first rendered."""
        document = json.loads(text)
        listed = [(p["policy"], p["version"]) for p in document["policies"]]
        if listed != [(p.id, p.version) for p in policies]:
            raise ValueError(f"the record was evaluated under {listed}")
        matched = tuple(hit for p in document["policies"] for _, hit in p["rules"])
        # Format 1 records predate provenance: their tests say nothing of it.
        outcomes = {signature: (*outcome, None)[:4] for signature, outcome in document["tests"].items()}
        return _decided(tuple(policies), matched, outcomes)

    def _render(self, describe: Callable[[ConditionTrace], str]) -> tuple[str, ...]:
        """Why the effect won: the rules that decided it or, when denied by default, why each
        allow and require_approval rule did not match."""
        several = len(self._policies) > 1
        lines = []
        described: dict[str, str] = {}  # by test signature: rules often share their baseline tests
        for policy, rule, trace, blamed in self._relevant:
            label = f"{policy.name}/{rule.id}" if several else rule.id
            head = f"rule {label} matched ({rule.effect}): " if trace.matched else f"rule {label}: "
            parts = []
            for condition, signature in blamed:
                text = described.get(signature)
                if text is None:
                    text = described[signature] = describe(condition)
                parts.append(text)
            lines.append(head + " and ".join(parts))
        if self.effect == "allow" and len(self._deciding) > 1:
            others = [f"{policy.name}/{rule.id}" if several else rule.id for policy, rule in self._deciding[1:]]
            lines.append(f"also allowed by {len(others)} more rule{'s' if len(others) > 1 else ''}: {', '.join(others)}")
        if not self._deciding:
            lines.append(
                "no rule matched: denied by default" if self._policies else "no policy applies: denied by default"
            )
        return tuple(lines)


def record_digest(record: str) -> str:
    """SHA-256 (hex) of a canonical trace record, as the ``key.decided`` event carries it."""
    return hashlib.sha256(record.encode()).hexdigest()


def applies_to(
    policy: Policy, device_id: str, device_groups: set[str], key_id: str, key_groups: set[str]
) -> bool:
    """Whether a policy governs this device asking for this key: both sides must be targeted."""
    targets = policy.targets
    device = (
        targets.devices == "all"
        or device_id in targets.devices
        or not targets.device_groups.isdisjoint(device_groups)
    )
    key = targets.keys == "all" or key_id in targets.keys or not targets.key_groups.isdisjoint(key_groups)
    return device and key


def strictest_disclosure(policies: Sequence[Policy]) -> Disclosure:
    levels = {p.disclose for p in policies}
    return next((level for level in DISCLOSURE_LEVELS if level in levels), "reasons")


def evaluate(
    policies: Sequence[Policy], facts: Mapping[str, Any], *, now: datetime, provenance: Mapping[str, str] | None = None,
) -> Decision:
    """Decide a request from the policies that apply to it (see ``applies_to``), its facts and their
    provenance (fact path -> provenance, ``shared/provenance.py``; None: only ``observed`` is observed)."""
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be timezone-aware")
    context = Context(facts, now, provenance)
    results: list[bool] = []
    for policy in policies:
        context.tz = policy.tz
        results.extend(_run_program(policy.program, context))
    return _decided(tuple(policies), tuple(results), context.outcomes)


def _run_program(program: Program, context: Context) -> tuple[bool, ...]:
    """Each rule's result, recording every test run in ``context.outcomes``."""
    outcomes, signatures, runners = context.outcomes, program.signatures, program.runners

    def test(i: int) -> bool:  # a test shared with an earlier policy is not run again
        outcome = outcomes.get(signatures[i])
        if outcome is None:
            outcome = outcomes[signatures[i]] = runners[i](context)
        return outcome[1]

    def first_test(i: int) -> bool:  # the first policy's tests are all new
        outcome = outcomes[signatures[i]] = runners[i](context)
        return outcome[1]

    return program.run(test if outcomes else first_test)



def _decided(policies: tuple[Policy, ...], results: tuple[bool, ...], outcomes: Mapping[str, Outcome]) -> Decision:
    """The decision from each rule's result: deny beats require_approval beats allow; none is deny."""
    matched: dict[Effect, list[tuple[Policy, Rule]]] = {"deny": [], "require_approval": [], "allow": []}
    flags = iter(results)
    for policy in policies:
        for rule, hit in zip(policy.rules, flags, strict=False):  # zip takes a flag only for a rule of this policy
            if hit:
                matched[rule.effect].append((policy, rule))
    winner: Effect | None = next((e for e in _PRECEDENCE if matched[e]), None)
    deciding = matched[winner] if winner else []
    approval = _strictest_approval([r.approval for _, r in deciding]) if winner == "require_approval" else None
    return Decision(
        effect=winner or "deny",
        approval=approval,
        disclose=strictest_disclosure(policies),
        _deciding=tuple(deciding),
        _policies=policies,
        _matched=results,
        _outcomes=outcomes,
    )


def holds(
    condition: Condition, facts: Mapping[str, Any], *, now: datetime, tz: Any = None,
    provenance: Mapping[str, str] | None = None,
) -> bool:
    """Whether a standalone condition (a dynamic group) holds for these facts; never raises."""
    context = Context(facts, now, provenance)
    context.tz = tz or _UTC
    return _holds(condition, context)


def _strictest_approval(approvals: list[Approval | None]) -> Approval:
    """Several approval rules matched: ask for the most approvals and trust them the shortest."""
    terms = [a for a in approvals if a is not None] or [Approval()]
    return Approval(
        approvals_required=max(a.approvals_required for a in terms),
        expires_in_seconds=min(a.expires_in_seconds for a in terms),
        remember_for_seconds=min(a.remember_for_seconds for a in terms),
    )


# --- the condition-tree walk: standalone conditions, and the reference the compiled programs match ---

def _holds(node: Condition, context: Context) -> bool:
    kind = type(node)
    if kind is Predicate:
        outcome = context.outcomes.get(node.signature)
        if outcome is None:
            outcome = context.outcomes[node.signature] = run(node, context)
        return outcome[1]
    if kind is NotOf:
        return not _holds(node.child, context)
    decisive = kind is AnyOf  # any() stops at the first true child, all() at the first false one
    outcomes = context.outcomes
    for child in node.children:
        if type(child) is Predicate:  # inlined: this loop is the evaluator's hot path
            outcome = outcomes.get(child.signature)
            if outcome is None:
                outcome = outcomes[child.signature] = run(child, context)
            result = outcome[1]
        else:
            result = _holds(child, context)
        if result is decisive:
            return decisive
    return not decisive
