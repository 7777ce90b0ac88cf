"""The compiled policy program decides as the condition-tree interpreter does (services.policysvc.program).

``evaluate`` runs policies through their compiled programs; ``holds`` (dynamic groups) walks the
tree. Both must give every rule the same result, run the same tests with the same outcomes, and
leave the explanation unchanged, for any policy and any facts, however odd.
"""

from datetime import UTC, datetime

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from services.policysvc.operator_registry import REGISTRY
from services.policysvc.operators import Context, run
from services.policysvc.policy import _holds, evaluate
from services.policysvc.program import compile_program
from services.policysvc.rules import parse_policy
from shared.provenance import PROVENANCES

NOW = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)

# A small universe of facts and tests, so that generated rules share tests and facts collide.
TESTS = [
    {"fact": "identity.region", "op": "equals", "value": "eu-west-1"},
    {"fact": "identity.region", "op": "not_equals", "value": "eu-west-1"},
    {"fact": "identity.region", "op": "in", "value": ["eu-west-1", "us-east-1"]},
    {"fact": "identity.hostname", "op": "matches", "value": "^db-"},
    {"fact": "identity.hostname", "op": "glob", "value": "*.prod"},
    {"fact": "identity.ip_addresses", "op": "cidr_contains", "value": ["10.0.0.0/8", "2001:db8::/32"]},
    {"fact": "identity.agent_version", "op": "gte", "value": "1.10.0"},
    {"fact": "identity.boot_time", "op": "age_under", "value": 600},
    {"fact": "integrity.firewall_enabled", "op": "equals", "value": True},
    {"fact": "integrity.antivirus.running", "op": "exists"},
    {"fact": 'integrity.file_hashes["/etc/hosts"]', "op": "equals", "value": "ab" * 32},
    {"fact": "integrity.attestation.nonce_age", "op": "lt", "value": 60},
    {"op": "within_time_window", "value": {"days": ["wed"], "from": "08:00", "to": "18:00"}},
    {"fact": "identity.ip_addresses[0]", "op": "equals", "value": "10.1.2.3"},
    {"fact": "identity.region", "op": "not_in", "value": ["cn-north-1", 1]},
    {"fact": "identity.agent_version", "op": "lte", "value": "1.9"},
    {"fact": "integrity.attestation.nonce_age", "op": "gt", "value": 2.5},
]



def test_the_generated_tests_use_every_operator():
    assert {test["op"] for test in TESTS} == set(REGISTRY)


# Some tests require a provenance, and each document's facts come with a provenance map.
required_tests = st.builds(lambda test, needs: {**test, "provenance": needs} if needs else test,
                           st.sampled_from(TESTS), st.sampled_from([None, None, *PROVENANCES]))
provenance_maps = st.one_of(st.none(), st.dictionaries(
    st.sampled_from(["identity", "identity.region", "identity.ip_addresses", "integrity.attestation", "observed",
                     'integrity.file_hashes["/etc/hosts"]']), st.sampled_from(PROVENANCES), max_size=4))

conditions = st.recursive(
    required_tests,
    lambda inner: st.one_of(
        st.builds(lambda children: {"all": children}, st.lists(inner, min_size=1, max_size=4)),
        st.builds(lambda children: {"any": children}, st.lists(inner, min_size=1, max_size=4)),
        st.builds(lambda child: {"not": child}, inner),
    ),
    max_leaves=12,
)

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-5, 5), st.floats(allow_nan=True),
    st.sampled_from(["eu-west-1", "db-1.prod", "1.9.3", "1.10.0", "10.1.2.3", "ab" * 32, "x" * 300,
                     "2025-03-12T09:25:00Z", "2025-03-12T10:30:00+01:00", ""]),
)
values = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=3), st.dictionaries(st.sampled_from(["running", "x", "/etc/hosts"]), inner, max_size=3)),
    max_leaves=6)
facts = st.one_of(
    st.fixed_dictionaries({}, optional={
        "identity": st.one_of(values, st.fixed_dictionaries({}, optional={
            "region": values, "hostname": values, "ip_addresses": values, "agent_version": values,
            "boot_time": values})),
        "integrity": st.one_of(values, st.fixed_dictionaries({}, optional={
            "firewall_enabled": values, "antivirus": values, "file_hashes": values, "attestation": values})),
        "observed": st.fixed_dictionaries({}, optional={"request_time": values}),
    }),
    values,
)


def interpreted(policy, document, provenance=None):
    """Each rule's result and every test outcome, by walking the condition trees."""
    context = Context(document, NOW, provenance)
    context.tz = policy.tz
    return tuple(_holds(rule.when, context) for rule in policy.rules), context.outcomes


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(whens=st.lists(conditions, min_size=1, max_size=6), effects=st.data(), document=facts, provenance=provenance_maps)
def test_compiled_program_matches_the_interpreter(whens, effects, document, provenance):
    rules = [{"id": f"r{i}", "effect": effects.draw(st.sampled_from(["allow", "deny", "require_approval"])),
              "when": when} for i, when in enumerate(whens)]
    policy = parse_policy({"name": "p", "targets": {"devices": "all", "keys": "all"}, "rules": rules,
                           "timezone": "Europe/Paris"}, policy_id="pol", version=1)
    matched, outcomes = interpreted(policy, document, provenance)

    decision = evaluate([policy], document, now=NOW, provenance=provenance)

    assert decision._matched == matched
    assert decision._outcomes == outcomes
    assert list(decision._outcomes) == list(outcomes)  # the same tests, run in the same order


@given(document=facts, provenance=provenance_maps)
@example(document={"identity": {"region": "x" * 300, "ip_addresses": ["10.1.2.3"]}}, provenance=None)  # clipped
@settings(max_examples=300, deadline=None)
def test_every_runner_gives_the_general_outcome(document, provenance):
    program = compile_program([parse_policy(
        {"name": "p", "targets": {"devices": "all", "keys": "all"},
         "rules": [{"id": f"r{i}", "effect": "allow", "when": test} for i, test in enumerate(TESTS)]},
        policy_id="pol", version=1).rules[i].when for i in range(len(TESTS))])
    context = Context(document, NOW, provenance)
    context.tz = UTC
    for predicate, runner in zip(program.tests, program.runners, strict=True):
        assert runner(context) == run(predicate, context), predicate.fact


def test_a_test_shared_by_two_policies_runs_once():
    shared = {"fact": "identity.region", "op": "equals", "value": "eu-west-1"}
    first, second = (
        parse_policy({"name": name, "targets": {"devices": "all", "keys": "all"},
                      "rules": [{"id": "r", "effect": "allow", "when": shared}]}, policy_id=name, version=1)
        for name in ("a", "b")
    )
    decision = evaluate([first, second], {"identity": {"region": "eu-west-1"}}, now=NOW)
    assert decision.effect == "allow" and len(decision._outcomes) == 1
    assert [ref.policy for ref in decision.decided_by] == ["a", "b"]


def test_generated_source_holds_no_policy_text():
    hostile = {"fact": 'identity["__import__(\'os\')"]', "op": "equals", "value": "'); import os; ('"}
    program = compile_program([parse_policy(
        {"name": "p", "targets": {"devices": "all", "keys": "all"},
         "rules": [{"id": "r", "effect": "allow", "when": {"not": hostile}}]}, policy_id="p", version=1).rules[0].when])
    assert program.run.__code__.co_consts.count("'); import os; ('") == 0
    assert program.run(lambda i: False) == (True,)


def test_the_largest_policy_the_parser_accepts_compiles_and_decides():
    from services.policysvc.documents import MAX_RULES
    from services.policysvc.rules import MAX_DEPTH

    deep = {"fact": "identity.region", "op": "equals", "value": "eu-west-1"}
    for level in range(MAX_DEPTH - 1):
        deep = {"not": deep} if level % 3 == 0 else {"any" if level % 2 else "all": [deep, TESTS[level % len(TESTS)]]}
    rules = [{"id": "deep", "effect": "deny", "when": deep}] + [
        {"id": f"r{i}", "effect": "allow", "when": {"fact": f"integrity.attestation.c{i}", "op": "equals", "value": i}}
        for i in range(MAX_RULES - 1)]
    policy = parse_policy({"name": "p", "targets": {"devices": "all", "keys": "all"}, "rules": rules},
                          policy_id="pol", version=1)
    document = {"identity": {"region": "eu-west-1"}, "integrity": {"attestation": {"c7": 7}}}

    decision = evaluate([policy], document, now=NOW)

    assert len(decision._matched) == MAX_RULES and len(policy.program.tests) >= MAX_RULES
    assert decision._matched == interpreted(policy, document)[0]
