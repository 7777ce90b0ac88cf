"""The web console's pure parts: countdowns, stream filters and summaries, CSRF tokens, SSE framing,
the route table's permissions, templates that need no inline script or style (the CSP forbids
them), and the vendored htmx files matching their recorded digests."""

from __future__ import annotations

import hashlib
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from services.gateway.console import present
from services.gateway.console.live import frame
from services.gateway.console.routes import ROUTES
from services.gateway.console.views_signin import provider_label
from services.gateway.console.web import CSP, csrf_token, same_csrf
from services.gateway.permissions import PERMISSIONS

from .test_gateway_stream import short_lived  # noqa: F401  (a gateway over memory stores, for `gateway`)

CONSOLE = Path(__file__).resolve().parents[2] / "services" / "gateway" / "console"
NOW = datetime(2026, 12, 5, 3, 0, tzinfo=UTC)


def test_countdowns_read_at_a_glance():
    assert present.remaining(NOW + timedelta(minutes=4, seconds=5), NOW) == "4m 05s"
    assert present.remaining((NOW + timedelta(seconds=42)).isoformat().replace("+00:00", "Z"), NOW) == "42s"
    assert present.remaining(NOW + timedelta(hours=2, minutes=3), NOW) == "2h 03m"
    assert present.remaining(NOW - timedelta(seconds=1), NOW) == "expired"
    assert present.remaining("not a time", NOW) == "unknown"
    assert present.remaining(datetime(2026, 12, 5, 3, 1), NOW) == "1m 00s"  # naive: UTC, as the stores keep it


def test_stream_filters_follow_their_event_types():
    assert present.stream_patterns(["releases"]) == ("key.released",)
    assert set(present.stream_patterns(["approvals", "alerts"])) == {
        "approval.*", "device.posture_failed", "device.quarantined", "device.revoked"}
    everything = present.stream_patterns([])
    assert present.stream_patterns(["nonsense"]) == everything and "key.decided" in everything
    assert present.stream_patterns(["requests"]) == ("key.requested",) and "key.requested" in everything


def test_raw_requests_name_the_version_and_contradicted_facts():
    asked = {"type": "key.requested", "key_version": None, "facts": {"identity": {}, "integrity": {}}}
    assert present.summary(asked) == "requested the latest version, 2 fact group(s)"
    assert present.summary({**asked, "key_version": 3, "contradicted": ["identity.region"]}) == (
        "requested version 3, 2 fact group(s); contradicted: identity.region")


def test_stream_lines_say_what_happened_without_key_material():
    assert present.summary({"type": "key.released", "key_version": 3, "sealed_key": ""}) == "released version 3"
    assert present.summary({"type": "key.decided", "effect": "deny", "reasons": ["rule r: region"]}) == (
        "decision: deny — rule r: region")
    assert present.summary({"type": "approval.voted", "approvals_received": 1, "approvals_required": 2}) == (
        "approved by one more: 1 of 2")
    assert present.summary({"type": "device.quarantined", "reason": "drift"}) == "quarantined: drift"
    event = {"type": "key.released", "key_id": "key_abc", "device_id": "dev_1", "request_id": "req_9"}
    assert present.matches(event, "") and present.matches(event, "KEY_A") and present.matches(event, "req_9")
    assert not present.matches(event, "key_zzz")


def test_csrf_tokens_are_per_session_and_compared_whole():
    one, other = csrf_token("sr_ses_one"), csrf_token("sr_ses_two")
    assert one == csrf_token("sr_ses_one") and one != other and len(one) == 64
    assert same_csrf(one, one) and not same_csrf(one, other) and not same_csrf(one, None) and not same_csrf(one, "")


def test_an_sse_message_carries_each_line_as_data():
    assert frame("<tr>\n<td>x</td>\n</tr>") == b"data: <tr>\ndata: <td>x</td>\ndata: </tr>\n\n"
    assert frame("") == b"data: \n\n"
    assert frame("<tr></tr>", "abc123") == b"id: abc123\ndata: <tr></tr>\n\n"  # the id a reconnect sends back


def test_every_console_route_names_a_permission_some_role_holds():
    for route in ROUTES:
        assert route.permission in PERMISSIONS, route
        assert route.path.startswith("/console/")
    votes = [r for r in ROUTES if r.path.endswith("/vote")]
    assert [r.permission for r in votes] == ["approvals.decide"]


def test_the_policy_allows_nothing_inline():
    assert "'unsafe-inline'" not in CSP and "'unsafe-eval'" not in CSP and "default-src 'none'" in CSP
    for template in (CONSOLE / "templates").glob("*.html"):
        text = template.read_text()
        assert not re.search(r"<script(?![^>]*\bsrc=)", text), template.name  # no inline script
        assert "<style" not in text and " style=" not in text, template.name
        assert not re.search(r"\son[a-z]+=", text) and "hx-on" not in text and "js:" not in text, template.name


def test_vendored_files_match_their_recorded_digests():
    vendor = CONSOLE / "static" / "vendor"
    recorded = dict(re.findall(r"\| `([\w.-]+)` \| `[^`]+` \| `([0-9a-f]{64})` \|", (vendor / "README.md").read_text()))
    assert set(recorded) == {"htmx.min.js", "hx-sse.min.js"}
    for name, digest in recorded.items():
        assert hashlib.sha256((vendor / name).read_bytes()).hexdigest() == digest, name
    assert "Zero-Clause BSD" in (vendor / "LICENSE.htmx").read_text()


def test_the_overview_counts_only_recent_decisions():
    def at(minutes: int) -> str:
        return (NOW - timedelta(minutes=minutes)).isoformat()

    decisions = [{"effect": "allow", "decided_at": at(1)}, {"effect": "allow", "decided_at": at(11)},
                 {"effect": "deny", "decided_at": at(9)}, {"effect": "require_approval", "decided_at": at(0)},
                 {"effect": "allow", "decided_at": "garbled"}]
    assert present.decision_counts(decisions, NOW) == {"allow": 1, "deny": 1, "require_approval": 1}


# --- the guard, on a gateway over memory stores (`short_lived`: sessions of 2 s) ----------------


@pytest.fixture
def gateway(short_lived):  # noqa: F811
    return short_lived


async def test_the_guard_signs_in_by_cookie_checks_csrf_then_the_permission(gateway):
    await gateway.tenant()
    _, auditor = await gateway.user("audrey", ["auditor"])
    _, member = await gateway.user("nora", [])  # signed in, no role yet
    client = gateway.client
    async with client.get("/console/approvals", allow_redirects=False) as resp:
        assert resp.status == 303 and resp.headers["Location"] == "/console/login"
        assert resp.headers["Content-Security-Policy"] == CSP
    async with client.get("/console/approvals", allow_redirects=False,
                          headers={"Cookie": "sr_console=sr_pat_not-a-session"}) as resp:
        assert resp.status == 303  # only a session token is a console credential
    async with client.post("/console/approvals/apr_1/vote", data={"verdict": "approve"}) as resp:
        assert resp.status == 401
    cookie = {"Cookie": f"sr_console={auditor}"}
    async with client.post("/console/approvals/apr_1/vote", data={"verdict": "approve"}, headers=cookie) as resp:
        assert resp.status == 403 and "CSRF" in await resp.text()
    async with client.post("/console/approvals/apr_1/vote", data={"verdict": "approve", "csrf_token": csrf_token(auditor)},
                           headers=cookie) as resp:
        assert resp.status == 403 and "approvals.decide" in await resp.text()  # an auditor reads, never votes
    async with client.get("/console/overview", headers={"Cookie": f"sr_console={member}"}) as resp:
        assert resp.status == 200 and resp.headers["X-Frame-Options"] == "DENY"
        page = await resp.text()
    # The page carries its session's CSRF token for htmx, and a role with no console area sees none.
    assert f'"X-CSRF-Token": "{csrf_token(member)}"' in page and "<script>" not in page
    assert "Nothing here for your roles" in page and "/console/approvals" not in page


async def test_sign_in_needs_the_forms_own_token(gateway):
    client = gateway.client
    async with client.get("/console/login") as resp:
        assert resp.status == 200 and resp.cookies["sr_console_pre"]["samesite"] == "Strict"
        assert resp.cookies["sr_console_pre"]["httponly"]
    async with client.post("/console/login", data={"username": "x", "password": "y" * 12, "csrf_token": "forged"}) as resp:
        assert resp.status == 403 and "sr_console" not in resp.cookies


def test_lifecycle_actions_follow_the_key_state_and_keys_are_counted_by_state():
    assert [name for name, _ in present.lifecycle_actions("active")] == ["suspend", "deactivate", "mark_compromised"]
    assert [name for name, _ in present.lifecycle_actions("suspended")] == ["resume", "deactivate", "mark_compromised"]
    assert [name for name, _ in present.lifecycle_actions("pre_activation")] == ["activate", "mark_compromised"]
    assert [name for name, _ in present.lifecycle_actions("destroyed")] == ["mark_compromised"]
    assert present.lifecycle_actions("destroyed_compromised") == [] and present.lifecycle_actions("nonsense") == []
    keys = [{"state": "suspended"}, {"state": "active"}, {"state": "active"}, {"state": "pre_activation"}]
    assert present.key_state_counts(keys) == [("pre_activation", 1), ("active", 2), ("suspended", 1)]


def test_the_sign_in_button_names_the_provider_by_host():
    assert provider_label({"protocol": "oidc", "issuer": "https://login.example.com/tenant-1"}) == "login.example.com (OIDC)"
    assert provider_label({"protocol": "saml", "idp_sso_url": "https://idp.corp.example/sso"}) == "idp.corp.example (SAML)"
    assert provider_label({"protocol": "saml"}) == "SAML"
