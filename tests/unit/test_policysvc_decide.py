"""The release path without I/O: the pure decision, and decide through the in-memory store."""

from __future__ import annotations

from datetime import timedelta

from services.policysvc.decision import UNKNOWN_DEVICE, DecisionInputs, DeviceState, decide, judge
from services.policysvc.groups import TenantGroups
from shared import commands_policy as c
from shared import events

from .policysvc_world import EPHEMERAL, EU_FACTS, TENANT, US_FACTS, World, compiled, eu_rule, now, policy

NO_GROUPS = TenantGroups((), {})


def _inputs(*, device=UNKNOWN_DEVICE, remembered_until=None, effect="allow", facts=EU_FACTS, **approval):
    requested = events.KeyRequested(tenant_id=TENANT, request_id="req_7", device_id="dev_1", key_id="key_1",
                                    facts=facts, ephemeral_public_key=EPHEMERAL)
    rules = compiled(policy("p", eu_rule(effect, **approval)))
    return DecisionInputs(request=requested, now=now(), device=device, groups=NO_GROUPS, policies=(rules,),
                          remembered_until=remembered_until, settings=c.PolicySettings(approval_expiry_seconds=600))


def test_a_quarantined_device_is_denied_whatever_the_policies_say():
    device = DeviceState(frozenset(), "quarantined", "posture check failed")
    decided = decide(_inputs(device=device))
    assert decided.outcome.effect == "deny" and decided.record is None
    assert decided.outcome.reasons == ("device is quarantined: posture check failed",)
    assert decided.outcome.disclosed == {"effect": "deny", "reasons": ["device is quarantined"]}


def test_an_allowed_request_carries_the_digest_of_its_trace_not_an_explanation():
    decided = decide(_inputs())
    assert decided.outcome.effect == "allow" and decided.outcome.disclosed == {"effect": "allow"}
    assert decided.record is not None and decided.outcome.trace_sha256


def test_an_approval_expires_at_the_shorter_of_rule_and_tenant():
    inputs = _inputs(effect="require_approval", expires_in_seconds=3600)
    decided = decide(inputs)
    assert decided.outcome.disclosed["approval_id"] == "apr_7"
    expires = decided.outcome.disclosed["expires_at"]
    assert expires == (inputs.now + timedelta(seconds=600)).isoformat()


def test_a_remembered_approval_in_force_stands_in_for_a_new_one():
    inputs = _inputs(effect="require_approval", remembered_until=now() + timedelta(hours=1))
    decided = decide(inputs)
    assert decided.outcome.effect == "allow" and "approval_id" not in decided.outcome.disclosed
    stale = decide(_inputs(effect="require_approval", remembered_until=now() - timedelta(seconds=1)))
    assert stale.outcome.effect == "require_approval"


def test_judge_takes_standing_now_and_policies_as_of_the_request():
    needs = compiled(policy("p", eu_rule("require_approval")))
    judged = judge([needs], "dev_1", "key_1", EU_FACTS, device=UNKNOWN_DEVICE, groups=NO_GROUPS,
                   remembered_until=now() + timedelta(minutes=1), at=now() - timedelta(days=1), now=now())
    assert judged.effect == "allow" and judged.standing is not None


async def test_decide_records_once_and_a_redelivery_republishes_the_same_outcome():
    world = World()
    await world.put_policy(policy())
    await world.enroll("dev_1")
    first = await world.ask("dev_1", request_id="req_same")
    again = await world.ask("dev_1", facts=US_FACTS, request_id="req_same")
    assert first.effect == "allow" and again.event_id == first.event_id
    assert len(world.store.decisions) == 1
    assert (await world.store.device(TENANT, "dev_1"))["released_keys"] == ["key_1"]


async def test_a_device_in_no_governing_policy_is_denied():
    world = World()
    await world.put_policy(policy())
    denied = await world.ask("dev_9", facts=US_FACTS)
    assert denied.effect == "deny"
    assert await world.store.device(TENANT, "dev_9") is None
