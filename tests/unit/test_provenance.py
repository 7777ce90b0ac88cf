"""Provenance rules: the order, how a request's map is read, and what a policy that requires more makes
of a weaker fact (shared/provenance.py, services/policysvc)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from services.policysvc.documents import PolicyError
from services.policysvc.explain import ConditionTrace, describe, describe_for_agent
from services.policysvc.policy import Decision, evaluate, holds
from services.policysvc.rules import parse_condition, parse_policy
from services.policysvc.simulation import CaseError, given_cases
from shared import events
from shared import provenance as trust
from shared.commands import PutPolicy
from tests.e2e import readme as readme_commands

NOW = datetime(2026, 12, 5, 9, 0, tzinfo=UTC)
FACTS = {"identity": {"region": "eu-west-1", "image_id": "ami-1"}, "observed": {"source_ip": "10.0.0.7"}}
REGION = {"fact": "identity.region", "op": "equals", "value": "eu-west-1"}


def policy(*conditions, policy_id="pol_1", **fields):
    when = conditions[0] if len(conditions) == 1 else {"all": list(conditions)}
    doc = {"name": "p", "targets": {"devices": "all", "keys": "all"},
           "rules": [{"id": "r", "effect": "allow", "when": when}], **fields}
    return parse_policy(doc, policy_id=policy_id, version=1)


def needs(provenance: str, condition=REGION) -> dict:
    return {**condition, "provenance": provenance}


# --- the order and the map ---

def test_the_order_is_attested_cloud_observed_claimed():
    assert trust.PROVENANCES == ("attested", "cloud", "observed", "claimed")
    assert [trust.at_least(p, "cloud") for p in trust.PROVENANCES] == [True, True, False, False]
    assert trust.at_least("claimed", "claimed") and not trust.at_least(None, "claimed")
    assert trust.stronger("cloud", "observed") == "cloud" and trust.stronger(None, "claimed") == "claimed"


def test_paths_are_canonical_and_read_through_their_ancestors():
    assert trust.fact_path(("integrity", "file_hashes", "/etc/hosts")) == 'integrity.file_hashes["/etc/hosts"]'
    assert trust.fact_path(("identity", "ip_addresses", 0)) == "identity.ip_addresses[0]"
    paths = trust.prefixes(("identity", "ip_addresses", 0))
    assert paths == ("identity.ip_addresses[0]", "identity.ip_addresses", "identity")
    assert trust.lookup({"identity.ip_addresses": "cloud"}, paths) == "cloud"
    assert trust.lookup({"identity.region": "cloud"}, paths) == "claimed"  # nothing said: claimed
    assert trust.valid_map({"identity.region": "cloud"}) and not trust.valid_map({"identity.region": "sworn"})
    assert not trust.valid_map(["cloud"]) and not trust.valid_map({"": "cloud"})


def test_every_fact_is_labelled_with_its_provenance():
    facts = {"identity": {"region": "eu-west-1", "ip_addresses": ["192.0.2.1"]},
             "integrity": {"file_hashes": {"/etc/hosts": "ab"}, "antivirus": {"running": False}}, "observed": {}}
    assert trust.labelled(facts, {"identity": "cloud", "integrity.antivirus.running": "attested"}) == {
        "identity.region": "cloud", "identity.ip_addresses": "cloud", 'integrity.file_hashes["/etc/hosts"]': "claimed",
        "integrity.antivirus.running": "attested", "observed": "claimed"}


# --- what a policy makes of provenance ---

@pytest.mark.parametrize("provenance, allowed", [("attested", True), ("cloud", True), ("observed", False),
                                                 ("claimed", False)])
def test_a_fact_weaker_than_the_condition_requires_never_satisfies_it(provenance, allowed):
    decision = evaluate([policy(needs("cloud"))], FACTS, now=NOW, provenance={"identity.region": provenance})
    assert (decision.effect == "allow") is allowed
    (condition,) = decision.trace[0].conditions
    assert (condition.provenance, condition.required) == (provenance, "cloud")
    if not allowed:
        assert decision.reasons[0] == (f"rule r: identity.region is only {provenance}: the condition requires cloud "
                                       f"provenance, so the {provenance} value does not count")
        assert decision.agent_reasons[0] == decision.reasons[0]  # names provenances, never values
    else:
        assert decision.reasons[0] == f"rule r matched (allow): identity.region ({provenance}) 'eu-west-1' == 'eu-west-1'"


def test_an_untrusted_fact_counts_as_absent_so_not_of_it_holds():
    deny_unless_eu = {"not": needs("cloud")}
    condition = parse_condition(deny_unless_eu)
    assert holds(condition, FACTS, now=NOW)  # only claimed: as if absent
    assert not holds(condition, FACTS, now=NOW, provenance={"identity": "cloud"})


def test_without_a_requirement_every_fact_counts_and_the_trace_still_says_where_it_came_from():
    decision = evaluate([policy(REGION, {"fact": "observed.source_ip", "op": "exists"})], FACTS, now=NOW)
    assert decision.effect == "allow"
    assert decision.fact_provenance == {"identity.region": "claimed", "observed.source_ip": "observed"}
    assert decision.reasons[0] == "rule r matched (allow): identity.region 'eu-west-1' == 'eu-west-1' and " \
                                  "observed.source_ip exists"


def test_the_policy_minimum_applies_unless_a_condition_names_its_own():
    source = {"fact": "observed.source_ip", "op": "exists"}
    proved = {**trust.GATEWAY_OBSERVED, "identity.region": "cloud"}  # as the gateway sends it
    strict = policy(REGION, source, minimum_provenance="cloud")
    assert evaluate([strict], FACTS, now=NOW, provenance=proved).effect == "deny"  # observed < cloud
    relaxed = policy(REGION, needs("observed", source), minimum_provenance="cloud")
    assert evaluate([relaxed], FACTS, now=NOW, provenance=proved).effect == "allow"
    assert evaluate([relaxed], FACTS, now=NOW).effect == "deny"  # the region is only claimed
    anything = policy(needs("claimed"), minimum_provenance="attested")  # a condition may ask for less
    assert evaluate([anything], FACTS, now=NOW).effect == "allow"


def test_one_fact_test_under_two_requirements_is_two_tests():
    loose, strict = policy(REGION, policy_id="loose"), policy(needs("cloud"), policy_id="strict")
    decision = evaluate([loose, strict], FACTS, now=NOW)
    assert [rule.matched for rule in decision.trace] == [True, False]
    assert decision.effect == "allow"  # the loose policy's rule allows; the strict one's did not match


def test_the_record_keeps_each_test_s_provenance_and_old_records_still_read():
    strict = policy(needs("cloud"))
    decision = evaluate([strict], FACTS, now=NOW)
    document = json.loads(decision.record(NOW))
    assert document["format"] == 2
    assert list(document["tests"].values()) == [["eu-west-1", False, "provenance below the requirement", "claimed"]]
    assert Decision.from_record(decision.record(NOW), [strict]).reasons == decision.reasons
    loose = policy(REGION)
    old = json.loads(evaluate([loose], FACTS, now=NOW).record(NOW))
    old["format"] = 1
    old["tests"] = {signature: outcome[:3] for signature, outcome in old["tests"].items()}  # before provenance
    replayed = Decision.from_record(json.dumps(old), [loose])
    assert replayed.effect == "allow" and replayed.trace[0].conditions[0].provenance is None


def test_a_compact_trace_names_provenance_and_requirement():
    decision = evaluate([policy(needs("attested"))], FACTS, now=NOW, provenance={"identity.region": "cloud"})
    (condition,) = decision.compact_trace[0]["conditions"]
    assert (condition["provenance"], condition["required"], condition["result"]) == ("cloud", "attested", False)


@pytest.mark.parametrize("doc, path", [
    ({"rules": [{"id": "r", "effect": "allow", "when": {**REGION, "provenance": "sworn"}}]}, "rules[0].when.provenance"),
    ({"minimum_provenance": "notarised"}, "minimum_provenance"),
])
def test_unknown_provenances_are_refused_naming_the_field(doc, path):
    base = {"name": "p", "targets": {"devices": "all", "keys": "all"},
            "rules": [{"id": "r", "effect": "allow", "when": REGION}]}
    with pytest.raises(PolicyError) as caught:
        parse_policy({**base, **doc}, policy_id="pol_1", version=1)
    assert caught.value.path == path


def test_missing_facts_are_missing_whatever_the_requirement():
    trace = ConditionTrace("when", "identity.region", "equals", "x", "<missing>", False, "fact not present", None, "cloud")
    assert describe(trace) == describe_for_agent(trace) == "identity.region is missing"


def test_simulated_requests_may_say_what_their_facts_are_worth():
    (case,) = given_cases([{"device_id": "d", "key_id": "k", "facts": {}, "provenance": {"identity.region": "cloud"}}],
                          now=NOW)
    assert case.provenance == {"identity.region": "cloud"}
    with pytest.raises(CaseError) as caught:
        given_cases([{"device_id": "d", "key_id": "k", "provenance": {"identity.region": "sworn"}}], now=NOW)
    assert caught.value.field == "requests[0].provenance"


def test_a_version_1_key_request_keeps_only_the_gateway_s_own_facts_observed():
    current = events.KeyRequested(tenant_id="t", request_id="r", device_id="d", key_id="k", facts={},
                                  ephemeral_public_key="x")
    raw = json.loads(events.encode_event(current))
    raw["version"] = 1
    for name in ("provenance", "contradicted", "evidence"):
        del raw[name]
    upcast = events.decode_event(json.dumps(raw).encode())
    assert upcast.version == 2 and upcast.provenance == trust.GATEWAY_OBSERVED and upcast.evidence is None


def test_the_readme_policies_parse_and_the_cloud_one_refuses_the_echo():
    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    heredoc = next(c.text for c in readme_commands.suite("ceremony") if c.text.startswith("cat > eu-prod.json <<'EOF'"))
    walkthrough = heredoc.split("\n", 1)[1].rsplit("\nEOF", 1)[0]
    example = readme.split('```json\n{"name": "eu-prod", "minimum_provenance"', 1)[1].split("\n```", 1)[0]
    def put(text: str, policy_id: str):  # as `strongroom policy put` sends it
        return parse_policy(PutPolicy(**json.loads(text)).model_dump(), policy_id=policy_id, version=1)

    claimed_ok = put(walkthrough, "pol_1")
    cloud = put('{"name": "eu-prod", "minimum_provenance"' + example, "pol_2")
    echoed = {"identity": {"region": "eu-west-1", "image_id": "ami-0a1b2c3d"}, "integrity": {"firewall_enabled": True},
              "observed": {"source_ip": "10.1.2.3"}}
    assert evaluate([claimed_ok], echoed, now=NOW).effect == "allow"
    assert evaluate([cloud], echoed, now=NOW).effect == "deny"
    proved = {**trust.GATEWAY_OBSERVED, "identity.region": "cloud", "identity.image_id": "cloud"}
    assert evaluate([cloud], echoed, now=NOW, provenance=proved).effect == "allow"
