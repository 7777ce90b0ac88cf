"""Audit search: a record's index terms cover every query that matches it, and matching is exact."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from services.auditsvc.records import record_from_event
from services.auditsvc.search import Criteria, chunk_postings, record_terms


def _record(**overrides):
    event = {
        "event_id": "evt_1", "type": "key.decided", "version": 1, "tenant_id": "ten_a",
        "occurred_at": "2026-05-01T12:00:00.000000Z", "correlation_id": "corr_1",
        "actor": {"kind": "device", "id": "dev_7", "auth": "signature"},
        "key_id": "key_1", "device_id": "dev_7", "effect": "deny",
    }
    event.update(overrides)
    return record_from_event(event)


def test_terms_name_action_outcome_and_every_identifier_once_but_not_the_event():
    assert record_terms(_record()) == {"action:key.decided", "outcome:denied", "v:dev_7", "v:key_1", "v:corr_1"}


def test_chunk_terms_are_distinct_and_sorted_with_the_offsets_of_their_records():
    records = [_record(event_id="evt_1"), _record(event_id="evt_2", key_id="key_2")]
    terms, postings = chunk_postings(records)
    assert terms == sorted(set(terms)) and len(postings) == len(terms)
    by_term = dict(zip(terms, postings, strict=True))
    assert by_term["action:key.decided"] == [0, 1]
    assert by_term["v:key_1"] == [0] and by_term["v:key_2"] == [1]


def test_matching_is_exact_where_terms_over_match():
    rec = _record()
    # dev_7 is the actor and the device, never the resource: one shared term, exact answers.
    assert Criteria(actor="dev_7").matches(rec) and Criteria(device="dev_7").matches(rec)
    assert not Criteria(resource="dev_7").matches(rec)
    assert Criteria(key="key_1").matches(rec) and Criteria(resource="key_1").matches(rec)
    assert not Criteria(key="key_2").matches(rec)
    assert Criteria(outcome="denied", action="key.decided").matches(rec)
    assert not Criteria(outcome="success").matches(rec)
    assert not Criteria(correlation_id="corr_2").matches(rec)


def test_time_bounds_are_inclusive_and_checked_per_record_and_per_chunk():
    rec = _record()
    t = rec["time"]
    assert Criteria(since=t, until=t).matches(rec)
    assert not Criteria(since="2026-05-01T12:00:00.000001Z").matches(rec)
    assert not Criteria(until="2026-05-01T11:59:59.999999Z").matches(rec)
    window = Criteria(since="2026-05-02T00:00:00Z", until="2026-05-03T00:00:00Z")
    assert window.overlaps("2026-05-01T00:00:00Z", "2026-05-02T00:00:00Z")
    assert not window.overlaps("2026-05-01T00:00:00Z", "2026-05-01T23:59:59Z")
    assert not window.overlaps("2026-05-03T00:00:01Z", "2026-05-04T00:00:00Z")


def test_lead_term_prefers_the_most_selective_field():
    assert Criteria().lead_term is None and Criteria().is_everything
    assert Criteria(since="2026-01-01T00:00:00Z").lead_term is None
    assert not Criteria(since="2026-01-01T00:00:00Z").is_everything
    assert Criteria(outcome="denied", action="key.released").lead_term == "action:key.released"
    assert Criteria(action="key.released", actor="usr_1").lead_term == "v:usr_1"
    assert Criteria(actor="usr_1", correlation_id="corr_9").lead_term == "v:corr_9"


_ids = st.sampled_from(["dev_1", "dev_2", "key_1", "key_2", "usr_1", "corr_1"])


@given(actor=_ids, key=_ids, device=_ids, corr=_ids, action=st.sampled_from(["key.released", "key.denied"]),
       q=st.fixed_dictionaries({}, optional={
           "actor": _ids, "key": _ids, "device": _ids, "resource": _ids, "correlation_id": _ids,
           "action": st.sampled_from(["key.released", "key.denied"]),
           "outcome": st.sampled_from(["success", "denied"])}))
def test_a_matching_record_always_carries_the_lead_term(actor, key, device, corr, action, q):
    """The index may over-match but never under-match: no query misses a record it matches."""
    rec = _record(type=action, actor={"kind": "user", "id": actor}, key_id=key, device_id=device,
                  correlation_id=corr, effect=None)
    criteria = Criteria(**q)
    if criteria.matches(rec) and criteria.lead_term is not None:
        assert criteria.lead_term in record_terms(rec)
