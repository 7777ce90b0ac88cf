"""The keys and devices screens' pure presentation: what each key version may still do, the keys
list's filters, a device's drift in a word or two, and facts with their provenance."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.gateway.console import present

NOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)


def test_key_versions_say_what_each_may_still_do():
    key = {"state": "active", "latest_version": 4, "min_decryption_version": 2}
    assert present.key_versions(key) == [
        {"version": 4, "state": "latest"}, {"version": 3, "state": "decrypt only"},
        {"version": 2, "state": "decrypt only"}, {"version": 1, "state": "retired"}]
    assert present.key_versions({"state": "active", "latest_version": 1, "min_decryption_version": 1}) == [
        {"version": 1, "state": "latest"}]
    destroyed = present.key_versions({"state": "destroyed_compromised", "latest_version": 2, "min_decryption_version": 1})
    assert [v["state"] for v in destroyed] == ["destroyed", "destroyed"]


def test_the_keys_list_filters_by_exact_state_and_part_of_a_name_or_id():
    items = [{"key_id": "key_a1", "name": "payroll-db", "state": "active"},
             {"key_id": "key_b2", "name": "Backups", "state": "suspended"}]
    assert present.filter_keys(items, "", "") == items
    assert [k["key_id"] for k in present.filter_keys(items, "suspended", "")] == ["key_b2"]
    assert [k["key_id"] for k in present.filter_keys(items, "", "BACK")] == ["key_b2"]
    assert [k["key_id"] for k in present.filter_keys(items, "", "a1")] == ["key_a1"]
    assert present.filter_keys(items, "active", "backup") == []


def test_drift_reads_at_a_glance():
    due_later, due_past = (NOW + timedelta(minutes=5)).isoformat(), (NOW - timedelta(seconds=1)).isoformat()
    beat = NOW.isoformat()
    assert present.drift(None, NOW) == "no posture yet"
    assert present.drift({"status": "revoked"}, NOW) == "revoked"
    assert present.drift({"status": "quarantined", "quarantine_cause": "facts"}, NOW) == "quarantined: facts"
    assert present.drift({"status": "quarantined"}, NOW) == "quarantined"
    assert present.drift({"status": "active", "last_heartbeat_at": None}, NOW) == "no heartbeat yet"
    assert present.drift({"status": "active", "last_heartbeat_at": beat, "heartbeat_due": due_past}, NOW) == \
        "heartbeat overdue"
    assert present.drift({"status": "active", "last_heartbeat_at": beat, "heartbeat_due": due_later}, NOW) == "in line"


def test_facts_carry_their_own_or_an_ancestors_provenance_else_claimed():
    facts = {"identity": {"region": "eu-west-1", "device_id": "dev_1"}, "integrity": {"firewall_enabled": True}}
    rows = present.fact_rows(facts, {"identity": "cloud", "identity.device_id": "observed"})
    assert rows == [("identity.device_id", "dev_1", "observed"), ("identity.region", "eu-west-1", "cloud"),
                    ("integrity.firewall_enabled", True, "claimed")]
