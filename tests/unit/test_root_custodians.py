"""Root custodians, pure: who receives each share of a new root (one distinct, eligible, enrolled
custodian per share, in the order named), the threshold floor of 2 and its explicit dev exception,
and the unseal round's rules (one share per person, a round nobody running can open is replaced)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from services.keysvc import custodians, unseal_rounds
from shared.crypto import shares

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _enrolled(*ids: str) -> list[dict]:
    return [{"custodian_id": i, "public_key": shares.new_recipient_key()[1], "enrolled_at": NOW} for i in ids]


def _choose(named=None, shares_=None, threshold=2, enrolled=("a", "b", "c"), eligible=("a", "b", "c"), allow_single=False):
    return custodians.choose(named=named, shares=shares_, threshold=threshold, enrolled=_enrolled(*enrolled),
                             eligible=set(eligible), allow_single=allow_single)


def test_share_i_goes_to_the_i_th_named_custodian_or_to_every_enrolled_eligible_one():
    chosen = _choose(named=["c", "a"])
    assert [(r.custodian_id, r.number) for r in chosen] == [("c", 1), ("a", 2)]
    assert len({r.key_id for r in chosen}) == 2
    # By default: every enrolled custodian still holding the role (a revoked one gets nothing).
    assert [r.custodian_id for r in _choose(eligible=("a", "c"))] == ["a", "c"]


@pytest.mark.parametrize(("kwargs", "field"), [
    ({"threshold": 1}, "threshold"),                                   # 1-of-n
    ({"named": ["a"], "threshold": 1}, "threshold"),                   # 1-of-1 without the dev setting
    ({"threshold": 4}, "threshold"),                                   # more than the custodians
    ({"named": ["a", "a"]}, "custodians"),                             # one person, two shares
    ({"named": ["a", "x"]}, "custodians"),                             # not a root custodian (e.g. a provider admin)
    ({"named": ["a", "d"], "eligible": ("a", "d")}, "custodians"),     # no enrolled key
    ({"named": ["a", "b"], "shares_": 3}, "shares"),                   # shares and custodians disagree
    ({"shares_": 5}, "shares"),                                        # not enough enrolled custodians
    ({"eligible": ()}, "custodians"),                                  # nobody
])
def test_a_layout_is_refused_naming_its_field(kwargs, field):
    with pytest.raises(custodians.CustodianError) as err:
        _choose(**kwargs)
    assert err.value.field == field


def test_one_of_one_only_with_the_explicit_dev_setting():
    (only,) = _choose(named=["a"], threshold=1, allow_single=True)
    assert only.custodian_id == "a" and only.number == 1
    with pytest.raises(custodians.CustodianError):
        _choose(named=["a", "b"], threshold=1, allow_single=True)  # 1-of-2 never


def test_each_person_submits_one_share_per_round_and_a_round_nobody_running_holds_is_replaced():
    doc = unseal_rounds.new_round("unr_1", "fp", now=NOW)
    doc["entries"].append({"by": "usr_a", "sealed_digest": "d1"})
    doc["transport"] = {"copies": {"kpeer_1": b"x"}}
    assert unseal_rounds.submitted_by(doc, "usr_a") and not unseal_rounds.submitted_by(doc, "usr_b")
    assert unseal_rounds.transport_held(doc, {"kpeer_1", "kpeer_2"})
    assert not unseal_rounds.transport_held(doc, {"kpeer_2"})
    assert not unseal_rounds.transport_held({"round_id": "unr_0"}, {"kpeer_1"})
