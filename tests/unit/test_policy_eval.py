"""Unit tests for policy evaluation: operators, precedence, traces, reasons and disclosure (services.policysvc.policy)."""

import dataclasses
import itertools
import json
import time
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.policysvc.documents import Approval
from services.policysvc.operators import MISSING_TEXT
from services.policysvc.policy import (
    ConditionTrace,
    Decision,
    RuleRef,
    applies_to,
    evaluate,
    record_digest,
)
from services.policysvc.rules import parse_policy

NOW = datetime(2025, 3, 12, 9, 30, tzinfo=UTC)  # a Wednesday; Paris is UTC+1 until 30 March
EU = {"fact": "identity.region", "op": "in", "value": ["eu-west-1"]}


def policy_of(*rules, policy_id="pol_1", version=1, **fields):
    doc = {"name": fields.pop("name", "prod-volumes"), "targets": {"devices": "all", "keys": "all"}, "rules": list(rules)}
    doc.update(fields)
    return parse_policy(doc, policy_id=policy_id, version=version)


def rule(when, id="r1", effect="allow", **fields):
    return {"id": id, "effect": effect, "when": when, **fields}


def check(condition, facts, *, now=NOW, **fields) -> ConditionTrace:
    """Evaluate one fact test in an allow rule; the trace of that test, after checking it decided the rule."""
    decision = evaluate([policy_of(rule(condition), **fields)], facts, now=now)
    (traced,) = decision.trace[0].conditions
    assert (decision.effect == "allow") is traced.result
    return traced


def ident(**facts):
    return {"identity": facts}


# --- operators ---

@pytest.mark.parametrize("value, actual, result", [
    ("eu-west-1", "eu-west-1", True),
    ("eu-west-1", "EU-WEST-1", False),
    (1, 1.0, True),
    (1, True, False),
    (True, 1, False),
    (False, 0, False),
    (0, False, False),
    ("1", 1, False),
    ({"a": [1, 2], "b": None}, {"b": None, "a": [1, 2]}, True),
    ([1, 2], [2, 1], False),
])
def test_equals_and_not_equals(value, actual, result):
    assert check({"fact": "identity.x", "op": "equals", "value": value}, ident(x=actual)).result is result
    assert check({"fact": "identity.x", "op": "not_equals", "value": value}, ident(x=actual)).result is not result


def test_equals_explains_a_type_difference():
    traced = check({"fact": "identity.x", "op": "equals", "value": 1}, ident(x=True))
    assert traced.note == "type differs: got a boolean"


@pytest.mark.parametrize("op", ["equals", "not_equals", "in", "not_in", "matches", "glob", "cidr_contains",
                                "lt", "lte", "gt", "gte", "age_under", "exists"])
@pytest.mark.parametrize("facts", [{}, ident(), ident(x=None), {"identity": "flat"}, {"identity": [1]}, None, []])
def test_missing_fact_is_false_for_every_operator(op, facts):
    value = {"in": ["a"], "not_in": ["a"], "cidr_contains": "10.0.0.0/8", "lt": 5, "lte": 5, "gt": 5, "gte": 5,
             "age_under": 60, "matches": "a", "glob": "a*", "equals": "a", "not_equals": "a"}
    condition = {"fact": "identity.x", "op": op} | ({"value": value[op]} if op in value else {})
    traced = check(condition, facts)
    assert (traced.result, traced.actual, traced.note) == (False, MISSING_TEXT, "fact not present")
    negated = evaluate([policy_of(rule({"not": condition}))], facts, now=NOW)
    assert negated.effect == "allow"


def test_in_and_not_in():
    allowed = {"fact": "identity.region", "op": "in", "value": ["eu-west-1", "eu-central-1", 7]}
    assert check(allowed, ident(region="eu-central-1")).result
    assert not check(allowed, ident(region="us-east-1")).result
    assert check(allowed, ident(region=7.0)).result
    assert not check(allowed, ident(region=["eu-west-1"])).result  # a list fact is one value, not a set
    assert not check({"fact": "identity.x", "op": "in", "value": [1]}, ident(x=True)).result
    assert check({"fact": "identity.x", "op": "not_in", "value": [1]}, ident(x=True)).result
    assert check({"fact": "identity.x", "op": "in", "value": [[1, 2], {"k": "v"}]}, ident(x={"k": "v"})).result


def test_matches_is_a_search_and_needs_a_string():
    pattern = {"fact": "identity.hostname", "op": "matches", "value": r"db-\d+\.prod"}
    assert check(pattern, ident(hostname="eu-db-12.prod.example")).result
    assert not check(pattern, ident(hostname="db-x.prod")).result
    anchored = {"fact": "identity.hostname", "op": "matches", "value": r"^db-\d+$"}
    assert not check(anchored, ident(hostname="evil-db-1")).result
    assert check({"fact": "identity.hostname", "op": "matches", "value": "^é+$"}, ident(hostname="éé")).result
    traced = check(pattern, ident(hostname=12))
    assert not traced.result and traced.note == "type mismatch: expected a string, got a number"


def test_matches_refuses_overlong_input():
    traced = check({"fact": "identity.hostname", "op": "matches", "value": "x"}, ident(hostname="x" * 4097))
    assert not traced.result and "longer than 4096" in traced.note
    assert traced.actual.endswith("...") and len(traced.actual) < 300


def test_catastrophic_regex_completes_quickly():
    hostile = {"fact": "identity.hostname", "op": "matches", "value": "(a+)+$"}
    nested = {"fact": "identity.hostname", "op": "matches", "value": "^(([a-z])+.)+[A-Z]([a-z])+$"}
    started = time.perf_counter()
    assert check(hostile, ident(hostname="a" * 4000 + "!")).result is False
    assert check(nested, ident(hostname="a" * 4000 + "!")).result is False
    assert time.perf_counter() - started < 1.0


def test_glob():
    condition = {"fact": "identity.hostname", "op": "glob", "value": "db-*.prod.example.com"}
    assert check(condition, ident(hostname="db-7.prod.example.com")).result
    assert not check(condition, ident(hostname="DB-7.prod.example.com")).result  # case-sensitive
    assert not check(condition, ident(hostname="db-7.prod.example.com.evil.net")).result  # whole string
    assert check({"fact": "identity.hostname", "op": "glob", "value": "web-[0-9]?"}, ident(hostname="web-1a")).result
    # a glob over a long input stays linear: RE2, not backtracking
    many_stars = {"fact": "identity.hostname", "op": "glob", "value": "*a*a*a*a*a*a*a*a*a*a*b"}
    started = time.perf_counter()
    assert not check(many_stars, ident(hostname="a" * 4000)).result
    assert time.perf_counter() - started < 1.0
    assert check(condition, ident(hostname=None)).actual == MISSING_TEXT
    assert "expected a string" in check(condition, ident(hostname=["db-7.prod.example.com"])).note


@pytest.mark.parametrize("value, actual, result", [
    ("10.0.0.0/8", "10.20.30.40", True),
    ("10.0.0.0/8", "11.0.0.1", False),
    (["192.168.0.0/16", "10.0.0.0/8"], "10.0.0.1", True),
    ("2001:db8::/32", "2001:db8:1::7", True),
    ("2001:db8::/32", "2001:db9::1", False),
    ("10.0.0.0/8", "::ffff:10.1.2.3", True),  # IPv4-mapped, as dual-stack sockets report
    ("::ffff:0:0/96", "::ffff:10.1.2.3", True),
    ("0.0.0.0/0", "2001:db8::1", False),  # families never mix
    ("::/0", "10.0.0.1", False),
    ("fe80::/10", "fe80::1%eth0", True),
    ("10.0.0.7", "10.0.0.7", True),  # a bare address is a /32
    (["10.0.0.0/8", "2001:db8::/32"], ["192.0.2.1", "2001:db8::5"], True),  # any address of a list
    ("10.0.0.0/8", ["192.0.2.1", "198.51.100.1"], False),
])
def test_cidr_contains(value, actual, result):
    assert check({"fact": "identity.ip_addresses", "op": "cidr_contains", "value": value},
                 ident(ip_addresses=actual)).result is result


@pytest.mark.parametrize("actual, note", [
    ("not-an-ip", "type mismatch: not an IP address"),
    ("10.0.0.0/8", "type mismatch: not an IP address"),
    (167772161, "type mismatch: not an IP address"),
    ([], "no IP addresses"),
    (["x", 5], "no valid IP addresses"),
    (["x", "192.0.2.1"], "ignored 1 entries that are not IP addresses"),
])
def test_cidr_contains_explains_unreadable_addresses(actual, note):
    traced = check({"fact": "observed.source_ip", "op": "cidr_contains", "value": "10.0.0.0/8"},
                   {"observed": {"source_ip": actual}})
    assert not traced.result and traced.note == note


def test_cidr_contains_still_matches_past_unreadable_entries():
    traced = check({"fact": "identity.ip_addresses", "op": "cidr_contains", "value": "10.0.0.0/8"},
                   ident(ip_addresses=["garbage", None, "10.1.1.1"]))
    assert traced.result


@pytest.mark.parametrize("op, value, actual, result", [
    ("gte", "1.10.0", "1.9.3", False),
    ("gte", "1.10.0", "1.10.0", True),
    ("gt", "1.9.3", "1.10.0", True),
    ("lt", "1.10", "1.9.99", True),
    ("lte", "1.2", "1.2.0", True),
    ("lt", "1.2", "1.2.0", False),
    ("lt", "1.0.0", "1.0.0-rc.1", True),
    ("gte", "v2.0", "2.0.1", True),
    ("lt", 10, 9.5, True),
    ("lt", 10, 10, False),
    ("lte", 10, 10, True),
    ("gt", 0.5, 1, True),
    ("gte", -1, -1.0, True),
    ("lt", "2025-01-01", "2024-12-31T23:59:59Z", True),
    ("lt", "2025-01-01T00:00:00Z", "2025-01-01T00:30:00+01:00", True),  # 23:30 UTC the day before
    ("gt", "2025-01-01T00:00:00Z", "2025-01-01", False),
    ("gte", "2025-01-01T00:00:00Z", "2025-01-01", True),
])
def test_ordered_comparisons(op, value, actual, result):
    traced = check({"fact": "identity.x", "op": op, "value": value}, ident(x=actual))
    assert traced.result is result and traced.note == ""


@pytest.mark.parametrize("value, actual, note", [
    ("1.10.0", 1.1, "type mismatch: expected a version, got a number"),
    ("1.10.0", "latest", "type mismatch: expected a version, got a string"),
    (5, "5", "type mismatch: expected a number, got a string"),
    (5, True, "type mismatch: expected a number, got a boolean"),
    (5, [1], "type mismatch: expected a number, got a list"),
    ("2025-01-01T00:00:00Z", "2025-01-01T00:00:00", "type mismatch: expected an RFC 3339 time, got a string"),
    ("2025-01-01T00:00:00Z", 1735689600, "type mismatch: expected an RFC 3339 time, got a number"),
    ("1.2.3", {"major": 1}, "type mismatch: expected a version, got an object"),
])
@pytest.mark.parametrize("op", ["lt", "gte"])
def test_ordered_comparison_type_mismatch_is_false_with_a_note(op, value, actual, note):
    traced = check({"fact": "identity.x", "op": op, "value": value}, ident(x=actual))
    assert traced.result is False and traced.note == note


WORKDAY = {"days": ["mon", "tue", "wed", "thu", "fri"], "from": "08:00", "to": "18:00"}


@pytest.mark.parametrize("zone, request_time, result", [
    ("UTC", "2025-03-12T07:30:00Z", False),
    ("Europe/Paris", "2025-03-12T07:30:00Z", True),  # 08:30 in Paris (UTC+1)
    ("Europe/Paris", "2025-03-12T16:59:00Z", True),  # 17:59 in Paris
    ("Europe/Paris", "2025-03-12T17:00:00Z", False),  # 18:00 in Paris: the end is exclusive
    ("Europe/Paris", "2025-07-09T16:30:00Z", False),  # 18:30 in Paris in summer (UTC+2)
    ("Europe/Paris", "2025-07-09T06:30:00Z", True),  # 08:30 in Paris in summer
    ("Europe/Paris", "2025-03-15T10:00:00Z", False),  # Saturday
    ("America/New_York", "2025-03-12T12:30:00Z", True),  # 08:30 EDT, three days after the change from EST
    ("Asia/Tokyo", "2025-03-09T23:30:00Z", True),  # Monday 08:30 in Tokyo, still Sunday in UTC
    ("UTC", "2025-03-12T09:00:00+09:00", False),  # the fact's offset is honoured: 00:00 UTC
])
def test_within_time_window_uses_the_policy_timezone(zone, request_time, result):
    traced = check({"op": "within_time_window", "value": WORKDAY}, {"observed": {"request_time": request_time}},
                   timezone=zone)
    assert traced.result is result
    assert traced.fact == "observed.request_time" and traced.note.endswith(zone)


def test_within_time_window_overnight_and_end_of_day():
    night = {"op": "within_time_window", "value": {"days": ["fri"], "from": "22:00", "to": "06:00"}}
    at = lambda when: {"observed": {"request_time": when}}  # noqa: E731
    assert check(night, at("2025-03-14T23:00:00Z")).result  # Friday 23:00
    assert check(night, at("2025-03-15T05:59:00Z")).result  # Saturday 05:59, the night that began Friday
    assert not check(night, at("2025-03-15T06:00:00Z")).result
    assert not check(night, at("2025-03-14T03:00:00Z")).result  # Friday 03:00 belongs to Thursday night
    assert not check(night, at("2025-03-15T23:00:00Z")).result  # Saturday night
    evening = {"op": "within_time_window", "value": {"from": "20:00", "to": "24:00"}}
    assert check(evening, at("2025-03-16T23:59:59Z")).result  # any day when days are omitted


def test_within_time_window_falls_back_to_now_and_rejects_bad_times():
    window = {"op": "within_time_window", "value": WORKDAY}
    traced = check(window, {}, now=NOW)  # Wednesday 09:30 UTC
    assert traced.result and traced.actual == NOW.isoformat() and "used evaluation time" in traced.note
    assert not check(window, {}, now=NOW.replace(hour=20)).result
    for bad in ["tomorrow", "2025-03-12T10:00:00", 1741771800, ["2025-03-12T10:00:00Z"]]:
        traced = check(window, {"observed": {"request_time": bad}})
        assert not traced.result and "expected an RFC 3339 time" in traced.note


@pytest.mark.parametrize("boot, result, note", [
    (NOW - timedelta(seconds=300), True, "age 300s"),
    (NOW - timedelta(seconds=600), False, "age 600s"),
    (NOW - timedelta(hours=5), False, "age 18000s"),
    (NOW + timedelta(seconds=60), True, "age -60s"),  # small clock skew is tolerated
    (NOW + timedelta(hours=1), False, "timestamp is 3600s in the future"),
])
def test_age_under(boot, result, note):
    traced = check({"fact": "identity.boot_time", "op": "age_under", "value": 600},
                   ident(boot_time=boot.isoformat()))
    assert traced.result is result and traced.note == note


def test_age_under_reads_offsets_and_rejects_non_times():
    condition = {"fact": "identity.boot_time", "op": "age_under", "value": 600}
    assert check(condition, ident(boot_time="2025-03-12T10:25:00+01:00")).result  # 09:25 UTC, 5 minutes ago
    for bad in ["yesterday", 1741771800, "2025-03-12T09:25:00"]:
        traced = check(condition, ident(boot_time=bad))
        assert not traced.result and "expected an RFC 3339 time" in traced.note


@pytest.mark.parametrize("facts, result", [
    ({"integrity": {"antivirus": {"running": False}}}, True),
    ({"integrity": {"antivirus": {"running": 0}}}, True),
    ({"integrity": {"antivirus": {"running": ""}}}, True),
    ({"integrity": {"antivirus": {"running": None}}}, False),
    ({"integrity": {"antivirus": {}}}, False),
    ({"integrity": {"antivirus": "running"}}, False),
    ({}, False),
])
def test_exists(facts, result):
    assert check({"fact": "integrity.antivirus.running", "op": "exists"}, facts).result is result


def test_bracketed_fact_paths():
    hashes = {"/etc/ssl/openssl.cnf": "ab" * 32}
    condition = {"fact": 'integrity.file_hashes["/etc/ssl/openssl.cnf"]', "op": "equals", "value": "ab" * 32}
    assert check(condition, {"integrity": {"file_hashes": hashes}}).result
    second = {"fact": "identity.ip_addresses[1]", "op": "equals", "value": "10.0.0.2"}
    assert check(second, ident(ip_addresses=["10.0.0.1", "10.0.0.2"])).result
    assert check(second, ident(ip_addresses=["10.0.0.1"])).actual == MISSING_TEXT
    assert check(second, ident(ip_addresses={"1": "10.0.0.2"})).actual == MISSING_TEXT


# --- combining conditions ---

def test_nested_all_any_not():
    when = {"all": [
        EU,
        {"any": [
            {"fact": "integrity.firewall_enabled", "op": "equals", "value": True},
            {"not": {"fact": "observed.source_ip", "op": "cidr_contains", "value": "0.0.0.0/0"}},
        ]},
        {"not": {"any": [
            {"fact": "identity.image_id", "op": "in", "value": ["ami-bad"]},
            {"fact": "integrity.antivirus.running", "op": "equals", "value": False},
        ]}},
    ]}
    policy = policy_of(rule(when, id="eu-baseline"))
    facts = {"identity": {"region": "eu-west-1", "image_id": "ami-good"},
             "integrity": {"firewall_enabled": False, "antivirus": {"running": True}},
             "observed": {"source_ip": "10.0.0.1"}}
    assert evaluate([policy], facts, now=NOW).effect == "deny"  # firewall off and address known
    facts["observed"] = {}
    assert evaluate([policy], facts, now=NOW).effect == "allow"  # not(cidr on a missing fact) holds
    facts["integrity"]["antivirus"]["running"] = False
    assert evaluate([policy], facts, now=NOW).effect == "deny"


def test_short_circuit_trace_lists_only_tests_run():
    when = {"all": [EU, {"any": [{"fact": "identity.zone", "op": "exists"},
                                 {"fact": "identity.hostname", "op": "exists"}]}]}
    policy = policy_of(rule(when))
    stopped_early = evaluate([policy], ident(region="us-east-1", zone="a"), now=NOW)
    assert [c.path for c in stopped_early.trace[0].conditions] == ["when.all[0]"]
    any_first = evaluate([policy], ident(region="eu-west-1", zone="a"), now=NOW)
    assert [c.path for c in any_first.trace[0].conditions] == ["when.all[0]", "when.all[1].any[0]"]
    any_second = evaluate([policy], ident(region="eu-west-1", hostname="h"), now=NOW)
    assert [(c.path, c.result) for c in any_second.trace[0].conditions] == [
        ("when.all[0]", True), ("when.all[1].any[0]", False), ("when.all[1].any[1]", True)]


def test_repeated_test_in_many_rules_has_a_trace_in_each():
    policy = policy_of(rule(EU, id="a"), rule({"all": [EU, {"fact": "identity.zone", "op": "exists"}]}, id="b"))
    decision = evaluate([policy], ident(region="eu-west-1"), now=NOW)
    assert [len(r.conditions) for r in decision.trace] == [1, 2]
    assert decision.trace[0].conditions[0]._replace(path="x") == decision.trace[1].conditions[0]._replace(path="x")
    assert decision.decided_by == (RuleRef("pol_1", 1, "a"),)


# --- effects and precedence ---

MATCH = {"fact": "identity.region", "op": "exists"}
NO_MATCH = {"fact": "identity.zone", "op": "exists"}
FACTS = ident(region="eu-west-1")


@pytest.mark.parametrize("effects, winner", [
    (["allow"], "allow"),
    (["require_approval"], "require_approval"),
    (["deny"], "deny"),
    (["allow", "require_approval"], "require_approval"),
    (["allow", "deny"], "deny"),
    (["require_approval", "deny"], "deny"),
    (["allow", "require_approval", "deny"], "deny"),
])
def test_precedence_deny_then_approval_then_allow_in_any_order(effects, winner):
    for order in itertools.permutations(effects):
        rules = [rule(MATCH, id=f"{e}-{i}", effect=e) for i, e in enumerate(order)]
        rules.append(rule(NO_MATCH, id="never", effect="deny"))
        decision = evaluate([policy_of(*rules)], FACTS, now=NOW)
        assert decision.effect == winner
        assert {ref.rule.split("-")[0] for ref in decision.decided_by} == {winner.split("-")[0]}


def test_no_rule_matched_is_deny_by_default_with_reasons():
    policy = policy_of(rule(EU, id="eu-only"), rule(NO_MATCH, id="zoned", effect="require_approval"),
                       rule(MATCH | {"fact": "identity.hostname"}, id="blocked", effect="deny"))
    decision = evaluate([policy], ident(region="us-east-1"), now=NOW)
    assert decision.effect == "deny" and decision.decided_by == () and decision.approval is None
    assert decision.reasons == (
        "rule eu-only: identity.region 'us-east-1' not in ['eu-west-1']",
        "rule zoned: identity.zone is missing",
        "no rule matched: denied by default",
    )
    assert [r.matched for r in decision.trace] == [False, False, False]


def test_no_policy_is_deny():
    decision = evaluate([], FACTS, now=NOW)
    assert decision.effect == "deny" and decision.trace == ()
    assert decision.reasons == ("no policy applies: denied by default",)


def test_precedence_across_policies():
    allows = policy_of(rule(MATCH, id="ok"), policy_id="pol_a", name="base", version=4)
    denies = policy_of(rule(MATCH, id="quarantine", effect="deny"), policy_id="pol_b", name="incident", version=2)
    silent = policy_of(rule(NO_MATCH, id="other"), policy_id="pol_c", name="other")
    decision = evaluate([allows, denies, silent], FACTS, now=NOW)
    assert decision.effect == "deny"
    assert decision.decided_by == (RuleRef("pol_b", 2, "quarantine"),)
    assert decision.reasons == ("rule incident/quarantine matched (deny): identity.region exists",)
    assert [(t.policy, t.version, t.rule) for t in decision.trace] == [
        ("pol_a", 4, "ok"), ("pol_b", 2, "quarantine"), ("pol_c", 1, "other")]
    assert evaluate([allows, silent], FACTS, now=NOW).effect == "allow"  # one policy's allow is enough


def test_require_approval_carries_the_strictest_terms():
    policy = policy_of(
        rule(MATCH, id="a", effect="require_approval", approval={"approvals_required": 2, "expires_in_seconds": 7200}),
        rule(MATCH, id="b", effect="require_approval",
             approval={"approvals_required": 1, "expires_in_seconds": 600, "remember_for_seconds": 300}),
        rule(NO_MATCH, id="c", effect="require_approval", approval={"approvals_required": 5}),
        rule(MATCH, id="d"),
    )
    decision = evaluate([policy], FACTS, now=NOW)
    assert decision.effect == "require_approval"
    assert [ref.rule for ref in decision.decided_by] == ["a", "b"]
    assert decision.approval == Approval(approvals_required=2, expires_in_seconds=600, remember_for_seconds=0)
    single = evaluate([policy_of(rule(MATCH, effect="require_approval"))], FACTS, now=NOW)
    assert single.approval == Approval()


def test_allow_reasons_describe_what_matched():
    when = {"all": [EU, {"fact": "identity.agent_version", "op": "gte", "value": "1.10.0"}]}
    decision = evaluate([policy_of(rule(when, id="eu-only"))], ident(region="eu-west-1", agent_version="1.10.2"),
                        now=NOW)
    assert decision.reasons == (
        "rule eu-only matched (allow): identity.region 'eu-west-1' in ['eu-west-1'] "
        "and identity.agent_version '1.10.2' >= '1.10.0'",
    )


def test_an_allow_is_explained_by_its_first_allowing_rule_and_names_the_others():
    policy = policy_of(rule(NO_MATCH, id="none"), rule(EU, id="eu"), rule(MATCH, id="any"), rule(MATCH, id="all"))
    decision = evaluate([policy], ident(region="eu-west-1"), now=NOW)
    assert [ref.rule for ref in decision.decided_by] == ["eu", "any", "all"]
    assert decision.reasons == ("rule eu matched (allow): identity.region 'eu-west-1' in ['eu-west-1']",
                                "also allowed by 2 more rules: any, all")
    assert [t["rule"] for t in decision.compact_trace] == ["eu"]  # decided_by names the others


def test_reasons_blame_the_tests_that_decided():
    when = {"any": [EU, {"not": {"fact": "integrity.firewall_enabled", "op": "equals", "value": False}}]}
    decision = evaluate([policy_of(rule(when, id="eu-or-firewall"))],
                        {"identity": {"region": "us-east-1"}, "integrity": {"firewall_enabled": False}}, now=NOW)
    assert decision.reasons[0] == (
        "rule eu-or-firewall: identity.region 'us-east-1' not in ['eu-west-1'] "
        "and integrity.firewall_enabled False == False"
    )
    mismatch = evaluate([policy_of(rule({"fact": "identity.agent_version", "op": "gte", "value": "1.10.0"}, id="v"))],
                        ident(agent_version=3), now=NOW)
    assert mismatch.reasons[0] == (
        "rule v: identity.agent_version 3 is not >= '1.10.0' (type mismatch: expected a version, got a number)")


def test_time_window_memo_respects_each_policy_timezone():
    window = {"op": "within_time_window", "value": {"from": "08:00", "to": "09:00"}}
    paris = policy_of(rule(window, id="paris"), policy_id="p1", timezone="Europe/Paris")
    utc = policy_of(rule(window, id="utc"), policy_id="p2", timezone="UTC")
    decision = evaluate([paris, utc], {"observed": {"request_time": "2025-03-12T07:30:00Z"}}, now=NOW)
    assert [t.matched for t in decision.trace] == [True, False]


# --- disclosure ---

def test_disclosure_levels():
    policy = policy_of(rule(EU, id="eu-only"), disclose="reasons")
    decision = evaluate([policy], ident(region="us-east-1"), now=NOW)
    assert decision.disclosed("none") == {"effect": "deny"}
    agent = decision.disclosed("reasons")
    assert agent == {"effect": "deny", "reasons": ["rule eu-only: identity.region failed in",
                                                   "no rule matched: denied by default"]}
    assert "us-east-1" not in json.dumps(agent) and "eu-west-1" not in json.dumps(agent)
    full = decision.disclosed("full")
    assert full["reasons"] == list(decision.reasons) and full["decided_by"] == []
    assert full["trace"] == [{
        "policy": "pol_1", "version": 1, "rule": "eu-only", "effect": "allow", "matched": False,
        "conditions": [{"path": "when", "fact": "identity.region", "op": "in", "expected": ["eu-west-1"],
                        "actual": "us-east-1", "result": False, "note": "", "provenance": "claimed", "required": "claimed"}],
    }]
    assert decision.disclosed() == agent  # the policy's own level
    with pytest.raises(ValueError):
        decision.disclosed("everything")


def test_disclosure_defaults_to_the_strictest_policy_and_shows_approval_terms():
    quiet = policy_of(rule(MATCH, id="q", effect="require_approval"), policy_id="p1", name="quiet", disclose="none")
    chatty = policy_of(rule(MATCH, id="c"), policy_id="p2", name="chatty", disclose="full")
    decision = evaluate([chatty, quiet], FACTS, now=NOW)
    assert decision.disclose == "none" and decision.disclosed() == {"effect": "require_approval"}
    shown = decision.disclosed("reasons")
    assert shown["approval"] == {"approvals_required": 1, "expires_in_seconds": 3600, "remember_for_seconds": 0}
    assert shown["reasons"] == ["rule quiet/q matched (require_approval): identity.region passed exists"]


def test_missing_facts_are_disclosed_as_missing():
    decision = evaluate([policy_of(rule(EU, id="eu-only"))], {}, now=NOW)
    assert decision.agent_reasons[0] == "rule eu-only: identity.region is missing"
    assert decision.reasons[0] == "rule eu-only: identity.region is missing"


# --- the decision as a value ---

def test_decision_is_immutable_and_its_trace_detached_from_the_facts():
    facts = ident(region="eu-west-1", ip_addresses=["10.0.0.1"])
    policy = policy_of(rule({"all": [EU, {"fact": "identity.ip_addresses", "op": "cidr_contains", "value": "10.0.0.0/8"}]}))
    decision = evaluate([policy], facts, now=NOW)
    facts["identity"]["ip_addresses"].append("192.0.2.1")
    facts["identity"]["region"] = "us-east-1"
    assert decision.trace[0].conditions[1].actual == ["10.0.0.1"]
    assert decision.trace[0].conditions[0].actual == "eu-west-1"
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.effect = "allow"


def test_large_and_deep_facts_are_summarised_not_fatal():
    deep: list = []
    for _ in range(5000):
        deep = [deep]
    big = list(range(1000))
    policy = policy_of(rule({"any": [
        {"fact": "identity.region", "op": "equals", "value": [1]},
        {"fact": "identity.ip_addresses", "op": "in", "value": [[1]]},
    ]}))
    decision = evaluate([policy], ident(region=deep, ip_addresses=big), now=NOW)
    first, second = decision.trace[0].conditions
    assert decision.effect == "deny"
    assert first.result is False and first.actual == "<list>" and "could not evaluate" in first.note
    assert second.actual == "<list of 1000 items>"
    json.dumps(decision.disclosed("full"))


# --- what travels and what is kept: compact trace, canonical record, digest ---

def test_compact_trace_of_an_allow_names_only_the_deciding_rules():
    policy = policy_of(rule(MATCH, id="ok"), rule(NO_MATCH, id="other"), rule(NO_MATCH, id="no", effect="deny"))
    decision = evaluate([policy], FACTS, now=NOW)
    assert decision.effect == "allow"
    assert decision.compact_trace == ({"policy": "pol_1", "version": 1, "rule": "ok", "effect": "allow", "matched": True},)
    assert len(decision.trace) == 3  # the full trace still has every rule


def test_compact_trace_of_a_deny_keeps_the_failed_conditions_with_values():
    when = {"all": [EU, {"fact": "identity.agent_version", "op": "gte", "value": "1.10.0"}]}
    policy = policy_of(rule(when, id="eu-recent"), rule(NO_MATCH, id="never", effect="deny"))
    decision = evaluate([policy], ident(region="eu-west-1", agent_version="1.9.3"), now=NOW)
    assert decision.effect == "deny"
    assert decision.compact_trace == ({
        "policy": "pol_1", "version": 1, "rule": "eu-recent", "effect": "allow", "matched": False,
        "conditions": [{"path": "when.all[1]", "fact": "identity.agent_version", "op": "gte", "expected": "1.10.0",
                        "actual": "1.9.3", "result": False, "note": "", "provenance": "claimed", "required": "claimed"}],
    },)
    denied = evaluate([policy_of(rule(EU, id="no-eu", effect="deny"), rule(MATCH, id="ok"))], ident(region="eu-west-1"),
                      now=NOW)
    assert [(t["rule"], [c["actual"] for c in t["conditions"]]) for t in denied.compact_trace] == [("no-eu", ["eu-west-1"])]


def test_record_commits_to_every_rule_and_value():
    policy = policy_of(rule(EU, id="eu"), rule({"fact": "identity.hostname", "op": "glob", "value": "db-*"}, id="db"))
    decision = evaluate([policy], ident(region="eu-west-1", hostname="web-1"), now=NOW)
    document = json.loads(decision.record(NOW))
    assert document["policies"] == [{"policy": "pol_1", "version": 1, "rules": [["eu", True], ["db", False]]}]
    assert sorted(actual for actual, _, _, _ in document["tests"].values()) == ["eu-west-1", "web-1"]
    assert decision.record(NOW) == json.dumps(document, sort_keys=True, separators=(",", ":"))  # canonical
    other = evaluate([policy], ident(region="eu-west-1", hostname="web-2"), now=NOW)
    assert other.effect == decision.effect and other.compact_trace == decision.compact_trace
    assert record_digest(other.record(NOW)) != record_digest(decision.record(NOW))  # the unseen value still counts
    assert len(record_digest(decision.record(NOW))) == 64


def test_record_rebuilds_the_full_trace_only_with_the_same_policy_versions():
    policy = policy_of(rule(EU, id="eu"), rule(MATCH, id="any", effect="require_approval"))
    decision = evaluate([policy], ident(region="us-east-1"), now=NOW)
    rebuilt = Decision.from_record(decision.record(NOW), [policy])
    assert rebuilt.trace == decision.trace and rebuilt.disclosed("full") == decision.disclosed("full")
    assert rebuilt.approval == decision.approval and rebuilt.effect == "require_approval"
    with pytest.raises(ValueError):
        Decision.from_record(decision.record(NOW), [policy_of(rule(EU, id="eu"), version=2)])


def test_now_must_be_aware():
    with pytest.raises(ValueError):
        evaluate([policy_of(rule(EU))], FACTS, now=datetime(2025, 1, 1))


# --- targets ---

@pytest.mark.parametrize("targets, device, device_groups, key, key_groups, result", [
    ({"devices": "all", "keys": "all"}, "dev_1", set(), "key_1", set(), True),
    ({"devices": ["dev_1"], "keys": "all"}, "dev_1", set(), "key_1", set(), True),
    ({"devices": ["dev_1"], "keys": "all"}, "dev_2", set(), "key_1", set(), False),
    ({"device_groups": ["grp_db"], "keys": ["key_1"]}, "dev_2", {"grp_web", "grp_db"}, "key_1", set(), True),
    ({"device_groups": ["grp_db"], "keys": ["key_1"]}, "dev_2", {"grp_web"}, "key_1", set(), False),
    ({"devices": "all", "key_groups": ["kg_prod"]}, "dev_1", set(), "key_9", {"kg_prod"}, True),
    ({"devices": "all", "key_groups": ["kg_prod"]}, "dev_1", set(), "key_9", {"kg_dev"}, False),
    ({"devices": ["dev_1"], "device_groups": ["grp"], "keys": ["key_1"], "key_groups": ["kg"]},
     "dev_x", {"grp"}, "key_x", {"kg"}, True),
])
def test_applies_to(targets, device, device_groups, key, key_groups, result):
    policy = parse_policy({"name": "p", "targets": targets, "rules": [rule(EU)]}, policy_id="p", version=1)
    assert applies_to(policy, device, device_groups, key, key_groups) is result


# --- properties ---

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=20),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=20,
)
FACT_KEYS = st.sampled_from(["region", "hostname", "agent_version", "boot_time", "ip_addresses", "source_ip",
                             "request_time", "firewall_enabled", "antivirus", "running", "x"])
FACT_DOCS = st.one_of(
    JSON,
    st.fixed_dictionaries({}, optional={
        group: st.dictionaries(FACT_KEYS, JSON | st.sampled_from(
            ["10.0.0.1", "::ffff:10.0.0.1", "1.10.0", "2025-03-12T09:00:00Z", "2025-03-12", "eu-west-1"]), max_size=6)
        for group in ("identity", "integrity", "observed")
    }),
)
EVERY_OPERATOR = policy_of(
    rule({"all": [EU, {"fact": "identity.hostname", "op": "matches", "value": "^(a|b)+$"}]}, id="a"),
    rule({"any": [{"fact": "identity.hostname", "op": "glob", "value": "db-*"},
                  {"fact": "identity.ip_addresses", "op": "cidr_contains", "value": ["10.0.0.0/8", "::/0"]},
                  {"fact": "observed.source_ip", "op": "cidr_contains", "value": "10.0.0.0/8"}]}, id="b",
         effect="require_approval"),
    rule({"not": {"any": [{"fact": "identity.agent_version", "op": "gte", "value": "1.10.0"},
                          {"fact": "identity.boot_time", "op": "lt", "value": "2025-01-01T00:00:00Z"},
                          {"fact": "identity.x", "op": "lte", "value": 3}]}}, id="c", effect="deny"),
    rule({"all": [{"op": "within_time_window", "value": WORKDAY},
                  {"fact": "identity.boot_time", "op": "age_under", "value": 600},
                  {"fact": "integrity.antivirus", "op": "exists"},
                  {"fact": "integrity.firewall_enabled", "op": "not_equals", "value": False},
                  {"fact": "identity.region", "op": "not_in", "value": ["cn-north-1", {"a": 1}]},
                  {"fact": "integrity.x", "op": "equals", "value": {"k": [1, "2"]}},
                  {"fact": "observed.x", "op": "gt", "value": 1.5}]}, id="d"),
    timezone="Europe/Paris",
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(facts=FACT_DOCS)
def test_evaluation_is_deterministic_and_never_raises(facts):
    first = evaluate([EVERY_OPERATOR], facts, now=NOW)
    second = evaluate([EVERY_OPERATOR], json.loads(json.dumps(facts)), now=NOW)
    assert isinstance(first, Decision) and first.effect in ("allow", "deny", "require_approval")
    assert first == second
    assert first.reasons == second.reasons and first.agent_reasons == second.agent_reasons
    assert first.disclosed("full") == second.disclosed("full")
    json.dumps(first.disclosed("full"))
    assert len(first.trace) == 4 and all(isinstance(r.matched, bool) for r in first.trace)
    # The canonical record is the same for equal facts, and gives back the same decision.
    assert first.record(NOW) == second.record(NOW)
    rebuilt = Decision.from_record(first.record(NOW), [EVERY_OPERATOR])
    assert rebuilt == first and rebuilt.reasons == first.reasons and rebuilt.compact_trace == first.compact_trace


@settings(max_examples=200, deadline=None)
@given(effects=st.lists(st.sampled_from(["allow", "deny", "require_approval"]), min_size=1, max_size=6),
       matches=st.lists(st.booleans(), min_size=6, max_size=6))
def test_effect_follows_precedence(effects, matches):
    rules = [rule(MATCH if matched else NO_MATCH, id=f"r{i}", effect=effect)
             for i, (effect, matched) in enumerate(zip(effects, matches, strict=False))]
    decision = evaluate([policy_of(*rules)], FACTS, now=NOW)
    matched = {e for e, m in zip(effects, matches, strict=False) if m}
    expected = next((e for e in ("deny", "require_approval", "allow") if e in matched), "deny")
    assert decision.effect == expected
    assert [r.matched for r in decision.trace] == [m for _, m in zip(effects, matches, strict=False)]
