"""Groups and approval votes: pure logic, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from services.policysvc import approvals as voting
from services.policysvc import policy as engine
from services.policysvc.groups import TenantGroups, parse_group
from services.policysvc.rules import PolicyError, parse_policy

NOW = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def test_dynamic_static_and_enrolled_membership():
    golden = parse_group({"name": "golden", "kind": "device",
                          "match": {"fact": "identity.image_id", "op": "in", "value": ["ami-1"]}}, group_id="g1")
    pinned = parse_group({"name": "pinned", "kind": "device", "members": ["dev_a"]}, group_id="g2")
    payroll = parse_group({"name": "payroll", "kind": "key", "members": ["key_1", "key_2"]}, group_id="g3")
    groups = TenantGroups.of([golden, pinned, payroll])
    facts = {"identity": {"image_id": "ami-1"}}
    assert groups.device_groups("dev_a", ["finance"], facts, now=NOW) == {"golden", "pinned", "finance"}
    assert groups.device_groups("dev_b", [], {"identity": {"image_id": "ami-2"}}, now=NOW) == set()
    assert groups.device_groups("dev_b", [], {"identity": "not an object"}, now=NOW) == set()
    assert groups.key_groups("key_2") == {"payroll"} and groups.key_groups("key_9") == frozenset()


def test_a_policy_applies_through_groups_only_when_both_sides_match():
    policy = parse_policy({"name": "p", "targets": {"device_groups": ["golden"], "key_groups": ["payroll"]},
                           "rules": [{"id": "r", "effect": "allow", "when": {"fact": "identity.region", "op": "exists"}}]},
                          policy_id="p", version=1)
    assert engine.applies_to(policy, "d", {"golden"}, "k", {"payroll"})
    assert not engine.applies_to(policy, "d", {"golden"}, "k", set())
    assert not engine.applies_to(policy, "d", set(), "k", {"payroll"})


@pytest.mark.parametrize("doc,path", [
    ({"name": "g", "kind": "device", "match": {"fact": "identity.x", "op": "bogus", "value": 1}}, "match.op"),
    ({"name": "g", "kind": "device", "match": {"any": []}}, "match.any"),
    ({"name": "g", "kind": "device", "match": {"fact": "secrets.x", "op": "exists"}}, "match.fact"),
    ({"name": "g", "kind": "key", "match": {"fact": "identity.x", "op": "exists"}}, "match"),
    ({"name": "g", "kind": "device"}, "members"),
    ({"name": "g", "kind": "device", "members": [""]}, "members[0]"),
    ({"name": "g g", "kind": "device", "members": ["d"]}, "name"),
    ({"name": "g", "kind": "device", "members": "d"}, "members"),
    ({"name": "g", "kind": "device", "members": ["d"], "extra": 1}, "extra"),
])
def test_invalid_groups_name_the_offending_field(doc, path):
    with pytest.raises(PolicyError) as raised:
        parse_group(doc, group_id="g")
    assert raised.value.path == path


def test_votes_count_once_per_person_and_never_for_the_requester_or_after_expiry():
    approval = {"status": "pending", "expires_at": NOW + timedelta(hours=1), "requested_by": "dev_1",
                "approvals_required": 2, "votes": [{"by": "alice"}]}
    voting.check_vote(approval, "bob", now=NOW)
    for person, status in (("alice", 409), ("dev_1", 403)):
        with pytest.raises(voting.VoteRefused) as refused:
            voting.check_vote(approval, person, now=NOW)
        assert refused.value.status == status
    with pytest.raises(voting.VoteRefused, match="expired"):
        voting.check_vote(approval, "bob", now=NOW + timedelta(hours=2))
    with pytest.raises(voting.VoteRefused, match="already approved"):
        voting.check_vote({**approval, "status": "approved"}, "bob", now=NOW)
    assert not voting.is_satisfied(approval)
    assert not voting.is_satisfied({**approval, "votes": [{"by": "alice"}, {"by": "alice"}]})
    assert voting.is_satisfied({**approval, "votes": [{"by": "alice"}, {"by": "bob"}]})


def test_expiry_is_the_shorter_of_rule_and_tenant():
    settings = voting.PolicySettings(approval_expiry_seconds=600)
    assert voting.expiry_seconds(3600, settings) == 600
    assert voting.expiry_seconds(120, settings) == 120
    assert voting.expiry_seconds(3600, voting.PolicySettings()) == 3600
