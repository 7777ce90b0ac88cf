"""Every policy operator is one complete record (services.policysvc.operator_registry).

Each entry must parse its value, check a fact, agree with the compiled program's fast path and
put both outcomes in words; the parser accepts exactly the registry's names. ``EXAMPLES`` holds one
passing and one failing fact per operator, so a new operator without an example fails here.
"""

from datetime import UTC, datetime

import pytest

from services.policysvc.documents import PolicyError
from services.policysvc.explain import ConditionTrace, describe, describe_for_agent
from services.policysvc.operator_registry import REGISTRY, Operator
from services.policysvc.operators import Context, run, runner
from services.policysvc.policy import evaluate
from services.policysvc.rules import parse_policy

NOW = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)  # a Wednesday
WINDOW = {"days": ["wed"], "from": "08:00", "to": "18:00"}


def at(path: str, value):
    """A facts document holding ``value`` at a dotted path."""
    *parents, leaf = path.split(".")
    document = {leaf: value}
    for key in reversed(parents):
        document = {key: document}
    return document


# op -> (fact, value or None for no value, a fact value that passes, one that fails or None for missing)
EXAMPLES = {
    "equals": ("identity.region", "eu-west-1", "eu-west-1", "us-east-1"),
    "not_equals": ("identity.region", "eu-west-1", "us-east-1", "eu-west-1"),
    "in": ("identity.region", ["eu-west-1", "eu-central-1"], "eu-west-1", "us-east-1"),
    "not_in": ("identity.region", ["cn-north-1"], "eu-west-1", "cn-north-1"),
    "matches": ("identity.hostname", "^db-", "db-7", "web-7"),
    "glob": ("identity.hostname", "db-*", "db-7", "web-7"),
    "cidr_contains": ("identity.ip_addresses", ["10.0.0.0/8"], ["10.1.2.3"], ["192.168.1.1"]),
    "lt": ("identity.agent_version", "1.10.0", "1.9.3", "1.10.2"),
    "lte": ("identity.agent_version", "1.10.0", "1.10.0", "1.10.1"),
    "gt": ("integrity.attestation.nonce_age", 5, 6, 5),
    "gte": ("integrity.attestation.nonce_age", 5, 5, 4),
    "within_time_window": ("observed.request_time", WINDOW, "2025-03-12T10:30:00Z", "2025-03-12T20:00:00Z"),
    "age_under": ("identity.boot_time", 600, "2025-03-12T09:25:00Z", "2025-03-12T08:00:00Z"),
    "exists": ("integrity.antivirus.running", None, True, None),
}


def fact_test(op: str) -> dict:
    fact, value, _, _ = EXAMPLES[op]
    test = {"fact": fact, "op": op}
    return test if value is None else {**test, "value": value}


def policy_of(when: dict):
    return parse_policy({"name": "p", "targets": {"devices": "all", "keys": "all"},
                         "rules": [{"id": "r1", "effect": "allow", "when": when}]}, policy_id="pol", version=1)


def facts_for(op: str, passing: bool) -> dict:
    fact, _, good, bad = EXAMPLES[op]
    chosen = good if passing else bad
    return {} if chosen is None else at(fact, chosen)


def test_every_operator_has_an_example():
    assert set(EXAMPLES) == set(REGISTRY)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_operator_is_a_complete_record(name):
    operator = REGISTRY[name]
    assert isinstance(operator, Operator) and operator.name == name
    assert callable(operator.parse) and callable(operator.check)
    holds, fails = operator.phrase
    assert holds and fails and holds != fails
    assert operator.show is None or callable(operator.show)
    assert operator.inline is None or callable(operator.inline)


def test_the_parser_accepts_exactly_the_registry_names():
    for name in REGISTRY:
        assert policy_of(fact_test(name)).rules[0].when.op == name
    with pytest.raises(PolicyError) as refused:
        policy_of({"fact": "identity.region", "op": "contains", "value": "eu"})
    assert refused.value.path == "rules[0].when.op"
    assert refused.value.message.endswith("expected one of " + ", ".join(REGISTRY))
    for near_miss in ("EQUALS", "equal", "in ", ""):
        with pytest.raises(PolicyError, match="unknown operator"):
            policy_of({"fact": "identity.region", "op": near_miss, "value": "eu"})


@pytest.mark.parametrize("name", list(REGISTRY))
def test_an_operator_takes_a_value_exactly_when_its_record_says(name):
    fact = EXAMPLES[name][0]
    if REGISTRY[name].takes_value:
        with pytest.raises(PolicyError, match=f"{name} needs a value"):
            policy_of({"fact": fact, "op": name})
    else:
        with pytest.raises(PolicyError, match=f"{name} takes no value"):
            policy_of({"fact": fact, "op": name, "value": 1})


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("passing", [True, False])
def test_every_operator_decides_and_renders_its_reason(name, passing):
    operator = REGISTRY[name]
    fact, value, _, _ = EXAMPLES[name]
    decision = evaluate([policy_of(fact_test(name))], facts_for(name, passing), now=NOW)

    assert decision.effect == ("allow" if passing else "deny")
    (condition,) = decision.trace[0].conditions
    assert condition.result is passing
    reason, agent_reason = decision.reasons[0], decision.agent_reasons[0]
    if condition.actual == "<missing>":
        assert reason.endswith(f"{fact} is missing")
        return
    phrase = operator.phrase[0 if passing else 1]
    if operator.takes_value:
        shown = operator.show(value) if operator.show else repr(value)
        assert f"{fact} {condition.actual!r} {phrase} {shown}" in reason
    else:
        assert reason.endswith(f"{fact} {phrase}")
    assert agent_reason.endswith(f"{fact} {'passed' if passing else 'failed'} {name}")


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("result", [True, False])
def test_both_phrases_render(name, result):
    """Also the outcome an evaluation cannot reach (an existing fact that fails ``exists``)."""
    fact, value, good, _ = EXAMPLES[name]
    text = describe(ConditionTrace("when", fact, name, value, good, result, ""))
    assert REGISTRY[name].phrase[0 if result else 1] in text and text.startswith(fact)
    assert describe_for_agent(ConditionTrace("when", fact, name, value, good, result, "")).endswith(name)


@pytest.mark.parametrize("name", list(REGISTRY))
@pytest.mark.parametrize("passing", [True, False])
def test_the_compiled_fast_path_gives_the_general_outcome(name, passing):
    predicate = policy_of(fact_test(name)).rules[0].when
    for document in (facts_for(name, passing), at(EXAMPLES[name][0], "x" * 300)):
        context = Context(document, NOW)
        context.tz = UTC
        assert runner(predicate)(context) == run(predicate, context)
