"""The console admin screens' pure parts: the canonical JSON and diff of policy versions, the audit
search's filters and export links, and the pending grants listed for a second admin."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from services.gateway.console.views_audit import export_links, search_params
from services.gateway.console.views_policies import canonical, diff_lines
from services.gateway.console.views_users import pending_grants
from shared import export_formats


def test_canonical_json_does_not_depend_on_key_order():
    assert canonical({"b": 1, "a": [1, {"d": 2, "c": 3}]}) == canonical({"a": [1, {"c": 3, "d": 2}], "b": 1})


def test_a_diff_names_the_changed_rule_and_nothing_when_equal():
    old = {"name": "p", "rules": [{"id": "eu-only", "effect": "allow"}]}
    new = {"name": "p", "rules": [{"id": "eu-central-only", "effect": "allow"}]}
    lines = diff_lines(old, new, "version 1", "version 2")
    assert [line["kind"] for line in lines[:3]] == ["head", "head", "hunk"]
    assert {"kind": "removed", "text": '-      "id": "eu-only"'} in lines
    assert {"kind": "added", "text": '+      "id": "eu-central-only"'} in lines
    assert all(line["kind"] == "same" for line in lines if '"effect"' in line["text"])
    assert diff_lines(old, dict(old), "version 1", "version 1") == []


def test_search_keeps_only_filled_in_known_filters():
    assert search_params({"action": " user.created ", "actor": "", "limit": "9", "evil": "x"}) == {"action": "user.created"}


def test_export_links_carry_the_filters_once_per_format():
    links = export_links({"action": "key.released", "since": "2026-12-01T00:00:00Z"})
    assert [link["name"] for link in links] == list(export_formats.NAMES)
    for link in links:
        url = urlsplit(link["href"])
        assert url.path == "/console/audit/export"
        assert parse_qs(url.query) == {"action": ["key.released"], "since": ["2026-12-01T00:00:00Z"],
                                       "format": [link["name"]]}


def test_pending_grants_name_who_granted_them():
    users = [{"user_id": "u1", "username": "ann", "pending_roles": []},
             {"user_id": "u2", "username": "paula", "pending_roles": [{"role": "approver", "granted_by": "u1"}]},
             {"user_id": "u3", "username": "gone", "pending_roles": [{"role": "key_custodian", "granted_by": "u9"}]}]
    assert pending_grants(users) == [
        {"user_id": "u2", "username": "paula", "role": "approver", "granted_by": "u1", "granted_by_name": "ann"},
        {"user_id": "u3", "username": "gone", "role": "key_custodian", "granted_by": "u9", "granted_by_name": "u9"}]
