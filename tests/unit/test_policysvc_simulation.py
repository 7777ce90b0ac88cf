"""Simulation, pure: which cases are accepted, and which pairs gain or lose their key."""

from __future__ import annotations

import pytest

from services.policysvc import simulation
from services.policysvc.decision import UNKNOWN_DEVICE, DeviceState
from services.policysvc.groups import TenantGroups

from .policysvc_world import EU_FACTS, US_FACTS, compiled, eu_rule, now, policy


def test_gains_and_losses_take_the_newest_outcome_per_pair():
    gained, lost = simulation.gains_and_losses({
        ("d1", "k"): ("deny", "allow"), ("d2", "k"): ("allow", "require_approval"), ("d3", "k"): ("allow", "allow"),
    })
    assert [(p.device_id, p.key_id) for p in gained] == [("d1", "k")]
    assert [(p.device_id, p.key_id) for p in lost] == [("d2", "k")]


@pytest.mark.parametrize(("given", "field"), [
    ([], "requests"),
    (["x"], "requests[0]"),
    ([{"key_id": "k"}], "requests[0].device_id"),
    ([{"device_id": "d", "key_id": "k", "facts": []}], "requests[0].facts"),
])
def test_given_cases_name_the_bad_field(given, field):
    with pytest.raises(simulation.CaseError) as refused:
        simulation.given_cases(given, now=now())
    assert refused.value.field == field


def test_a_candidate_that_denies_the_eu_is_a_loss_and_quarantine_wins_over_both():
    cases = simulation.given_cases([
        {"device_id": "d1", "key_id": "k", "facts": EU_FACTS},
        {"device_id": "d2", "key_id": "k", "facts": US_FACTS},
        {"device_id": "d3", "key_id": "k", "facts": EU_FACTS},
    ], now=now())
    devices = {"d1": UNKNOWN_DEVICE, "d2": UNKNOWN_DEVICE, "d3": DeviceState(frozenset(), "quarantined", "silent")}
    result = simulation.simulate(
        cases, [compiled(policy("p"))], [compiled(policy("p", eu_rule("deny")), version=0)], devices=devices,
        groups=TenantGroups((), {}), remembered={}, now=now(),
    )
    assert (result.requests, result.changed) == (3, 1)
    assert [(p.device_id, p.key_id) for p in result.lost] == [("d1", "k")] and result.gained == []
    quarantined = result.items[2]
    assert (quarantined.current, quarantined.candidate, quarantined.changed) == ("deny", "deny", False)
