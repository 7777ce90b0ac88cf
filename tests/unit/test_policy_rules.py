"""Unit tests for policy documents: shape, limits, compiled operands and error paths (services.policysvc.rules)."""

import copy
import json
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest

from agent.collectors.firewall import parse_nft_json
from services.policysvc.conditions import AllOf, AnyOf, NotOf, Predicate
from services.policysvc.documents import MAX_RULES, Approval, PolicyError
from services.policysvc.facts import Facts
from services.policysvc.operands import glob_to_regex, parse_timestamp, parse_version
from services.policysvc.rules import (
    MAX_DEPTH,
    MAX_POLICY_BYTES,
    Policy,
    parse_policy,
    parse_policy_json,
)

REGION_EU = {"fact": "identity.region", "op": "in", "value": ["eu-west-1"]}


def document(*rules, **fields):
    doc = {
        "name": "prod-volumes",
        "targets": {"devices": "all", "keys": "all"},
        "rules": list(rules) or [{"id": "eu-only", "effect": "allow", "when": REGION_EU}],
    }
    doc.update(fields)
    return doc


def rule(when, *, id="r1", effect="allow", **fields):
    return {"id": id, "effect": effect, "when": when, **fields}


def parse(doc):
    return parse_policy(doc, policy_id="pol_1", version=3)


def error_of(doc) -> PolicyError:
    with pytest.raises(PolicyError) as caught:
        parse(doc)
    return caught.value


def nested_not(depth: int) -> dict:
    """A condition ``depth`` levels deep: depth-1 nots around one fact test."""
    node = dict(REGION_EU)
    for _ in range(depth - 1):
        node = {"not": node}
    return node


# --- accepted documents ---

def test_parse_full_document():
    doc = document(
        rule({"all": [REGION_EU, {"not": {"fact": "observed.source_ip", "op": "cidr_contains", "value": "10.0.0.0/8"}}]},
             id="eu-only", description="EU hosts only"),
        rule({"fact": "identity.hostname", "op": "matches", "value": r"^db-\d+$"}, id="review", effect="require_approval",
             approval={"approvals_required": 2, "expires_in_seconds": 600, "remember_for_seconds": 60}),
        rule({"op": "within_time_window", "value": {"days": ["sat", "SUN"], "from": "00:00", "to": "24:00"}},
             id="weekend", effect="deny"),
        description="volumes in prod", disclose="full", timezone="Europe/Paris",
        targets={"devices": ["dev_1"], "device_groups": ["grp_db"], "keys": "all", "key_groups": []},
    )
    policy = parse(doc)
    assert isinstance(policy, Policy)
    assert (policy.id, policy.version, policy.name, policy.disclose, policy.timezone) == (
        "pol_1", 3, "prod-volumes", "full", "Europe/Paris")
    assert policy.tz.key == "Europe/Paris"
    assert policy.targets.devices == frozenset({"dev_1"}) and policy.targets.keys == "all"
    assert [r.id for r in policy.rules] == ["eu-only", "review", "weekend"]
    when = policy.rules[0].when
    assert isinstance(when, AllOf) and isinstance(when.children[1], NotOf)
    assert when.children[0].path == "when.all[0]" and when.children[1].child.path == "when.all[1].not"
    assert policy.rules[1].approval == Approval(approvals_required=2, expires_in_seconds=600, remember_for_seconds=60)
    window = policy.rules[2].when
    assert window.fact == "observed.request_time" and window.operand.days == frozenset({5, 6})
    assert policy.rules[0].approval is None


def test_defaults():
    policy = parse(document())
    assert policy.disclose == "reasons" and policy.timezone == "UTC" and policy.description == ""


def test_require_approval_gets_default_terms():
    policy = parse(document(rule(REGION_EU, effect="require_approval")))
    assert policy.rules[0].approval == Approval(approvals_required=1, expires_in_seconds=3600, remember_for_seconds=0)


def test_parse_does_not_modify_the_document():
    doc = document()
    before = copy.deepcopy(doc)
    parse(doc)
    assert doc == before


def test_equal_tests_share_a_signature_and_timezone_separates_windows():
    window = {"op": "within_time_window", "value": {"from": "08:00", "to": "18:00"}}
    a = parse(document(rule({"all": [REGION_EU, window]}, id="a"), rule({"any": [REGION_EU]}, id="b")))
    b = parse(document(rule(window), timezone="Asia/Tokyo"))
    first, second = a.rules[0].when.children, a.rules[1].when.children
    assert first[0].signature == second[0].signature
    assert first[1].signature != b.rules[0].when.signature


@pytest.mark.parametrize("fact, keys", [
    ("identity.region", ("identity", "region")),
    ("integrity.antivirus.pattern_date", ("integrity", "antivirus", "pattern_date")),
    ('integrity.file_hashes["/etc/ssl/openssl.cnf"]', ("integrity", "file_hashes", "/etc/ssl/openssl.cnf")),
    ("identity.ip_addresses[1]", ("identity", "ip_addresses", 1)),
    ('integrity.attestation["a \\"b\\""].c', ("integrity", "attestation", 'a "b"', "c")),
])
def test_fact_paths(fact, keys):
    policy = parse(document(rule({"fact": fact, "op": "exists"})))
    assert policy.rules[0].when.keys == keys


def test_parse_policy_json_checks_size_before_decoding():
    raw = json.dumps(document()).encode()
    assert parse_policy_json(raw, policy_id="p", version=1).name == "prod-volumes"
    with pytest.raises(PolicyError) as caught:
        parse_policy_json(b" " * (MAX_POLICY_BYTES + 1), policy_id="p", version=1)
    assert caught.value.path == "" and "larger than" in caught.value.message
    with pytest.raises(PolicyError, match="not valid JSON"):
        parse_policy_json(b"{", policy_id="p", version=1)


def test_facts_model_documents_groups_and_allows_extra_keys():
    facts = Facts.model_validate({
        "identity": {"region": "eu-west-1", "ip_addresses": ["10.0.0.1"], "custom": 1},
        "integrity": {"antivirus": {"running": True, "pattern_date": "2025-01-01"}},
        "observed": {"source_ip": "10.0.0.1"},
        "extra": {},
    })
    assert facts.identity.region == "eu-west-1" and facts.integrity.antivirus.running is True
    assert facts.identity.model_extra == {"custom": 1}


def test_facts_model_reads_what_the_agent_collectors_report():
    ruleset = parse_nft_json((Path(__file__).parent / "collector_outputs" / "nft_filter.json").read_text())
    integrity = {**ruleset.facts(["inet filter input"]),
                 "antivirus": {"present": True, "running": False, "version": "1.4.6", "database_age_days": 0.5},
                 "agent_files": {"install": "wheel", "ok": True, "checked": 3, "modified": [], "missing": []},
                 "secure_boot": "unknown"}
    facts = Facts.model_validate({"integrity": integrity})
    assert facts.integrity.firewall.ruleset_sha256 == ruleset.sha256 and facts.integrity.firewall_enabled is True
    assert facts.integrity.agent_files.ok is True and facts.integrity.secure_boot == "unknown"


# --- operand parsing helpers ---

@pytest.mark.parametrize("low, high", [
    ("1.9.3", "1.10.0"),
    ("1.2", "1.2.1"),
    ("1.0.0-rc.1", "1.0.0"),
    ("1.0.0-alpha", "1.0.0-alpha.1"),
    ("1.0.0-alpha.2", "1.0.0-alpha.10"),
    ("1.0.0-2", "1.0.0-alpha"),
    ("v2.0", "10.0"),
])
def test_version_order(low, high):
    assert parse_version(low) < parse_version(high)


def test_version_equivalences_and_rejections():
    assert parse_version("1.2") == parse_version("1.2.0") == parse_version("v1.2.0+build.7")
    for text in ["", "abc", "1..2", "1.2.", "-1", "1.2.3-", "9" * 30, "1" * 200]:
        assert parse_version(text) is None, text


def test_timestamps():
    assert parse_timestamp("2025-03-01T10:00:00Z") == datetime(2025, 3, 1, 10, tzinfo=UTC)
    assert parse_timestamp("2025-03-01t11:00:00.123456789+01:00") == datetime(
        2025, 3, 1, 10, 0, 0, 123456, tzinfo=UTC)
    assert parse_timestamp("2025-03-01") == datetime(2025, 3, 1, tzinfo=UTC)
    for text in ["2025-03-01T10:00:00", "2025-13-01", "yesterday", "1.2.3", "2025-03-01T25:00:00Z", "2025W01"]:
        assert parse_timestamp(text) is None, text


@pytest.mark.parametrize("pattern, yes, no", [
    ("*.example.com", ["a.example.com", ".example.com"], ["example.com", "a.example.com.evil", "A.EXAMPLE.COM"]),
    ("web-??", ["web-01"], ["web-1", "web-001"]),
    ("host[0-3]", ["host2"], ["host4", "host"]),
    ("host[!0-3]", ["host4"], ["host2"]),
    ("a[b", ["a[b"], ["ab"]),
    ("[]]x", ["]x"], ["x"]),
    ("a.b+c(d)", ["a.b+c(d)"], ["aab+c(d)", "a.bbc(d)"]),
    ("x\\*", ["x\\abc"], ["x*"]),
])
def test_glob_translation(pattern, yes, no):
    import re2

    compiled = re2.compile(glob_to_regex(pattern))
    assert all(compiled.search(text) for text in yes)
    assert not any(compiled.search(text) for text in no)


# --- rejected documents, with the JSON path of the fault ---

@pytest.mark.parametrize("when, path, message", [
    ({"fact": "identity.region", "op": "regex", "value": "x"}, "rules[0].when.op", "unknown operator 'regex'"),
    ({"all": [REGION_EU, {"fact": "identity.region", "op": "nope"}]}, "rules[0].when.all[1].op", "unknown operator"),
    ({"fact": "observed.source_ip", "op": "cidr_contains", "value": "10.0.0.300/8"}, "rules[0].when.value", "invalid CIDR"),
    ({"fact": "observed.source_ip", "op": "cidr_contains", "value": ["10.0.0.0/8", "10.0.0.1/8"]},
     "rules[0].when.value[1]", "host bits"),
    ({"fact": "observed.source_ip", "op": "cidr_contains", "value": []}, "rules[0].when.value", "non-empty"),
    ({"fact": "observed.source_ip", "op": "cidr_contains", "value": [10]}, "rules[0].when.value[0]", "string"),
    ({"fact": "identity.region", "op": "in", "value": "eu-west-1"}, "rules[0].when.value", "non-empty list"),
    ({"fact": "identity.region", "op": "not_in", "value": []}, "rules[0].when.value", "non-empty list"),
    ({"fact": "identity.region", "op": "equals"}, "rules[0].when.value", "needs a value"),
    ({"fact": "identity.region", "op": "equals", "value": None}, "rules[0].when.value", "use exists"),
    ({"fact": "identity.region", "op": "exists", "value": True}, "rules[0].when.value", "no value"),
    ({"fact": "identity.hostname", "op": "matches", "value": "(?=lookahead)"}, "rules[0].when.value", "invalid regular"),
    ({"fact": "identity.hostname", "op": "matches", "value": "(unclosed"}, "rules[0].when.value", "invalid regular"),
    ({"fact": "identity.hostname", "op": "matches", "value": "a" * 513}, "rules[0].when.value", "longer than 512"),
    ({"fact": "identity.hostname", "op": "matches", "value": "((a{100}){100}){100}"}, "rules[0].when.value", "invalid"),
    ({"fact": "identity.hostname", "op": "matches", "value": 5}, "rules[0].when.value", "non-empty string"),
    ({"fact": "identity.hostname", "op": "glob", "value": "[z-a]"}, "rules[0].when.value", "invalid regular"),
    ({"fact": "identity.agent_version", "op": "gte", "value": "latest"}, "rules[0].when.value", "number, a version"),
    ({"fact": "identity.agent_version", "op": "lt", "value": True}, "rules[0].when.value", "number, a version"),
    ({"fact": "identity.agent_version", "op": "lt", "value": [1]}, "rules[0].when.value", "number, a version"),
    ({"fact": "identity.boot_time", "op": "age_under", "value": 0}, "rules[0].when.value", "positive"),
    ({"fact": "identity.boot_time", "op": "age_under", "value": "600"}, "rules[0].when.value", "positive"),
    ({"op": "within_time_window", "value": {"days": ["mon", "funday"], "from": "08:00", "to": "18:00"}},
     "rules[0].when.value.days[1]", "unknown day 'funday'"),
    ({"op": "within_time_window", "value": {"days": [], "from": "08:00", "to": "18:00"}},
     "rules[0].when.value.days", "at least one day"),
    ({"op": "within_time_window", "value": {"from": "8am", "to": "18:00"}}, "rules[0].when.value.from", "HH:MM"),
    ({"op": "within_time_window", "value": {"from": "08:00", "to": "24:01"}}, "rules[0].when.value.to", "HH:MM"),
    ({"op": "within_time_window", "value": {"from": "24:00", "to": "08:00"}}, "rules[0].when.value.from", "HH:MM"),
    ({"op": "within_time_window", "value": {"from": "08:00", "to": "08:00"}}, "rules[0].when.value.to", "same time"),
    ({"op": "within_time_window", "value": {"from": "08:00"}}, "rules[0].when.value.to", "missing"),
    ({"op": "within_time_window", "value": {"from": "08:00", "to": "09:00", "tz": "UTC"}},
     "rules[0].when.value.tz", "unknown field"),
    ({"op": "within_time_window", "value": ["08:00", "09:00"]}, "rules[0].when.value", "valid dictionary"),
    ({"fact": "identity.boot_time", "op": "within_time_window", "value": {"from": "08:00", "to": "09:00"}},
     "rules[0].when.fact", "observed.request_time only"),
    ({"op": "equals", "value": 1}, "rules[0].when.fact", "missing"),
    ({"fact": "region", "op": "exists"}, "rules[0].when.fact", "starts with one of"),
    ({"fact": "secrets.region", "op": "exists"}, "rules[0].when.fact", "starts with one of"),
    ({"fact": "identity", "op": "exists"}, "rules[0].when.fact", "name a fact inside"),
    ({"fact": "identity..region", "op": "exists"}, "rules[0].when.fact", "bad fact path"),
    ({"fact": "identity.region[", "op": "exists"}, "rules[0].when.fact", "bad fact path"),
    ({"fact": 'identity["\\q"]', "op": "exists"}, "rules[0].when.fact", "bad quoted key"),
    ({"fact": "identity." + "a" * 300, "op": "exists"}, "rules[0].when.fact", "1 to 256"),
    ({"fact": "identity.region", "op": "exists", "note": "x"}, "rules[0].when.note", "unknown field"),
    ({"all": []}, "rules[0].when.all", "non-empty list"),
    ({"any": {"fact": "identity.region", "op": "exists"}}, "rules[0].when.any", "non-empty list"),
    ({"all": [REGION_EU], "any": [REGION_EU]}, "rules[0].when", "exactly one"),
    ({"not": REGION_EU, "fact": "identity.region"}, "rules[0].when", "exactly one"),
    ({"not": "identity.region"}, "rules[0].when.not", "must be an object"),
    ({"any": [REGION_EU, ["x"]]}, "rules[0].when.any[1]", "must be an object"),
    ({"all": [{"any": [{"not": {"fact": "identity.region", "op": "gt", "value": "x"}}]}]},
     "rules[0].when.all[0].any[0].not.value", "number, a version"),
])
def test_condition_errors_name_the_field(when, path, message):
    error = error_of(document(rule(when)))
    assert error.path == path
    assert message in error.message
    assert str(error).startswith(path + ": ")


def test_error_path_points_at_the_right_rule():
    error = error_of(document(rule(REGION_EU, id="ok"), rule(REGION_EU, id="ok2"),
                              rule({"all": [{"fact": "identity.region", "op": "bogus"}]}, id="bad")))
    assert error.path == "rules[2].when.all[0].op"


@pytest.mark.parametrize("doc, path, message", [
    (document(extra=1), "extra", "unknown field"),
    (document(rule(REGION_EU, priority=1)), "rules[0].priority", "unknown field"),
    (document(rule(REGION_EU, effect="maybe")), "rules[0].effect", "'allow', 'deny' or 'require_approval'"),
    (document(rule(REGION_EU, id="")), "rules[0].id", "at least 1"),
    (document(rule(REGION_EU, id="has space")), "rules[0].id", "pattern"),
    (document(rule("identity.region == 'eu'")), "rules[0].when", "valid dictionary"),
    (document(rule(REGION_EU), rule(REGION_EU, id="r2"), rule(REGION_EU)), "rules[2].id", "duplicate rule id 'r1'"),
    (document(rules=[]), "rules", "at least 1"),
    (document(rules={}), "rules", "valid list"),
    (document(disclose="some"), "disclose", "'none', 'reasons' or 'full'"),
    (document(timezone="Mars/Olympus"), "timezone", "unknown time zone"),
    (document(timezone="../../etc/passwd"), "timezone", "unknown time zone"),
    (document(name=""), "name", "at least 1"),
    ({"targets": {"devices": "all", "keys": "all"}, "rules": [rule(REGION_EU)]}, "name", "missing"),
    (document(targets={"devices": "some", "keys": "all"}), "targets.devices", '"all" or a list'),
    (document(targets={"devices": ["dev_1", ""], "keys": "all"}), "targets.devices", '"all" or a list'),
    (document(targets={"devices": "all", "keys": "all", "tenants": []}), "targets.tenants", "unknown field"),
    (document(targets={"devices": [], "keys": "all"}), "targets.devices", "targets no device"),
    (document(targets={"devices": "all"}), "targets.keys", "targets no key"),
    (document(targets={"devices": "all", "device_groups": "grp", "keys": "all"}), "targets.device_groups", "valid list"),
    (document(rule(REGION_EU, approval={"approvals_required": 2})), "rules[0].approval", "only to require_approval"),
    (document(rule(REGION_EU, effect="require_approval", approval={"approvals_required": 0})),
     "rules[0].approval.approvals_required", "greater than or equal to 1"),
    (document(rule(REGION_EU, effect="require_approval", approval={"approvals_required": "2"})),
     "rules[0].approval.approvals_required", "valid integer"),
    (document(rule(REGION_EU, effect="require_approval", approval={"quorum": 2})),
     "rules[0].approval.quorum", "unknown field"),
])
def test_document_errors_name_the_field(doc, path, message):
    error = error_of(doc)
    assert error.path == path
    assert message in error.message


def test_not_an_object():
    assert error_of([]).path == ""
    assert "not JSON" in error_of({"name": {1, 2}}).message


def test_nesting_limit():
    assert isinstance(parse(document(rule(nested_not(MAX_DEPTH)))).rules[0].when, NotOf)
    error = error_of(document(rule(nested_not(MAX_DEPTH + 1))))
    assert error.path == "rules[0].when" + ".not" * MAX_DEPTH
    assert "deeper than 16" in error.message


def test_nesting_limit_counts_all_and_any_too():
    node = dict(REGION_EU)
    for level in range(MAX_DEPTH):
        node = {"all": [node]} if level % 2 else {"any": [REGION_EU, node]}
    error = error_of(document(rule(node)))
    assert "deeper than 16" in error.message
    assert error.path == "rules[0].when" + ".all[0].any[1]" * 7 + ".all[0].any[0]"  # the test at depth 17


def test_absurd_nesting_fails_cleanly():
    error = error_of(document(rule(nested_not(100_000))))
    assert "deeper than 16" in error.message


def test_rule_count_limit():
    rules = [rule(REGION_EU, id=f"r{i}") for i in range(MAX_RULES)]
    assert len(parse(document(*rules)).rules) == MAX_RULES
    error = error_of(document(*rules, rule(REGION_EU, id="one-too-many")))
    assert error.path == "rules" and "at most 200" in error.message


def test_size_limit():
    rules = [rule(REGION_EU, id=f"r{i}", description="x" * 1000) for i in range(70)]
    error = error_of(document(*rules))
    assert error.path == "" and f"limit is {MAX_POLICY_BYTES}" in error.message


def test_hostile_regex_compiles_in_linear_time_engine():
    started = time.perf_counter()
    policy = parse(document(rule({"fact": "identity.hostname", "op": "matches", "value": "(a+)+$"})))
    assert policy.rules[0].when.operand.search("a" * 4000 + "!") is None
    assert time.perf_counter() - started < 1.0


def test_predicate_is_compiled_once():
    policy = parse(document(rule({"any": [
        {"fact": "observed.source_ip", "op": "cidr_contains", "value": ["10.0.0.0/8", "2001:db8::/32"]},
        {"fact": "identity.agent_version", "op": "gte", "value": "1.10.0"},
        {"fact": "identity.boot_time", "op": "lt", "value": "2025-01-01T00:00:00Z"},
        {"fact": "integrity.attestation.nonce_age", "op": "lte", "value": 30},
    ]})))
    cidr, version, moment, number = policy.rules[0].when.children
    assert isinstance(policy.rules[0].when, AnyOf) and all(isinstance(c, Predicate) for c in (cidr, version))
    assert [(n.version, n.text) for n in cidr.operand] == [(4, "10.0.0.0/8"), (6, "2001:db8::/32")]
    assert (version.operand.kind, moment.operand.kind, number.operand.kind) == ("version", "time", "number")
