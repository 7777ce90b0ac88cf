"""A credential lives only as long as what it stands for: a password change, an MFA reset, disabling
a user or revoking a role ends that user's sessions and API tokens; token lifetimes are capped by the
tenant; a token is MFA-verified only if minted from an MFA-verified session; an open event stream
ends with its credential and carries only what that credential may read."""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime, timedelta

import pyotp

from .helpers import PASSWORD, BareAgent, make_team, make_tenant, put_confirmed_settings

GROUP = {"name": "web", "kind": "device", "members": ["dev_web_1"]}


async def _token(person, **body) -> object:
    status, out, _ = await person.call("POST", "/v1/tokens", json={"name": "ci", **body})
    assert status == 201, out
    return person.as_(out["token"])


async def test_password_change_ends_api_tokens_and_sessions(api):
    team = await make_team(api)
    officer = await team.user("security_officer", username="olga")
    token = await _token(officer)
    assert (await token.call("GET", "/v1/keys"))[0] == 200
    code = pyotp.TOTP(officer.totp_secret).at(datetime.now(UTC) + timedelta(seconds=30))
    status, out, _ = await officer.call("POST", "/v1/me/password", json={
        "current_password": PASSWORD, "new_password": "harbour-lantern-quartz-5512", "totp": code})
    assert status == 204, out
    assert (await token.call("GET", "/v1/keys"))[0] == 401  # the 365-day token died with the password
    assert (await officer.call("GET", "/v1/me"))[0] == 401


async def test_mfa_reset_ends_api_tokens(api):
    team = await make_team(api)
    officer = await team.user("security_officer", username="lost-phone")
    token = await _token(officer)
    status, out, _ = await team.admin.call("POST", f"/v1/users/{officer.user_id}/mfa/reset")
    assert status == 202, out
    status, out, _ = await team.second_admin.call("POST", f"/v1/users/{officer.user_id}/mfa/reset/confirm")
    assert status == 200, out
    assert (await token.call("GET", "/v1/keys"))[0] == 401
    assert (await officer.call("GET", "/v1/me"))[0] == 401


async def test_revoking_a_role_or_disabling_a_user_ends_their_credentials(api):
    team = await make_team(api)
    both = await team.user("security_officer", "auditor", username="two-hats")
    token = await _token(both)
    status, out, _ = await team.admin.call("POST", f"/v1/users/{both.user_id}/roles", json={"revoke": ["auditor"]})
    assert status == 200 and out["roles"] == ["security_officer"], out
    assert (await token.call("GET", "/v1/keys"))[0] == 401
    assert (await both.call("GET", "/v1/me"))[0] == 401
    code = pyotp.TOTP(both.totp_secret).at(datetime.now(UTC) + timedelta(seconds=30))
    status, out, _ = await api.as_(None).call("POST", "/v1/auth/login", json={
        "tenant": team.tenant_id, "username": "two-hats", "password": PASSWORD, "totp": code})
    assert status == 201, out  # a new sign-in works as before
    again = api.as_(out["session_token"])
    later = await _token(again)
    assert (await later.call("GET", "/v1/keys"))[0] == 200
    status, out, _ = await team.admin.call("POST", f"/v1/users/{both.user_id}/disable")
    assert status == 200, out
    assert (await later.call("GET", "/v1/keys"))[0] == 401
    assert (await again.call("GET", "/v1/me"))[0] == 401


async def test_token_lifetime_is_capped_by_the_tenant(api, mongo_client, db_prefix):
    team = await make_team(api)
    auditor = await team.user("auditor")
    status, out, _ = await auditor.call("POST", "/v1/tokens", json={"name": "long", "expires_in_seconds": 365 * 86400})
    assert status == 422 and out["field"] == "expires_in_seconds" and "7776000" in out["detail"], out
    status, out, _ = await auditor.call("POST", "/v1/tokens", json={"name": "default"})
    assert status == 201, out
    created = datetime.fromisoformat(out["created_at"])
    assert datetime.fromisoformat(out["expires_at"]) - created == timedelta(days=90)
    # A lowered cap also shortens tokens minted before it: this one is made two days old.
    old = await _token(auditor)
    tokens = mongo_client[f"{db_prefix}gateway"]["tokens"]
    await tokens.update_one({"tenant_id": team.tenant_id, "name": "ci"},
                            {"$set": {"created_at": datetime.now(UTC) - timedelta(days=2)}})
    await put_confirmed_settings(team, {"token_max_days": 1})
    assert (await old.call("GET", "/v1/keys"))[0] == 401
    status, out, _ = await auditor.call("POST", "/v1/tokens", json={"name": "two-days", "expires_in_seconds": 2 * 86400})
    assert status == 422 and out["field"] == "expires_in_seconds", out


async def test_a_token_minted_without_mfa_never_counts_as_mfa_verified(api):
    team = await make_team(api)
    person = await team.user("auditor", username="no-mfa-yet")  # auditors need no TOTP
    assert person.totp_secret is None
    token = await _token(person)
    status, out, _ = await team.admin.call("POST", f"/v1/users/{person.user_id}/roles", json={"grant": ["security_officer"]})
    assert status == 200 and [p["role"] for p in out["pending_roles"]] == ["security_officer"], out
    status, out, _ = await team.second_admin.call("POST", f"/v1/users/{person.user_id}/roles/security_officer/confirm")
    assert status == 200 and "security_officer" in out["roles"], out
    # The grant needs MFA: a token minted from a password-only session does not carry it.
    status, out, _ = await token.call("POST", "/v1/groups", json=GROUP)
    assert status == 403, out


async def _next_event(stream, timeout: float = 10.0) -> tuple[str, dict]:
    """The next `event:` of an SSE stream and its data."""
    kind = None

    async def read() -> tuple[str, dict]:
        nonlocal kind
        async for raw in stream.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("event: "):
                kind = line[7:]
            elif line.startswith("data: ") and kind:
                return kind, json.loads(line[6:])
        return "closed", {}

    return await asyncio.wait_for(read(), timeout)


async def _open(http, api, credential: str):
    stream = await http.get(f"{api.url}/v1/events/stream", headers={"Authorization": f"Bearer {credential}"})
    assert stream.status == 200
    assert (await stream.content.readline()).startswith(b": stream open")
    return stream


async def test_an_open_stream_ends_at_logout_and_at_token_revocation(api, http):
    tenant = await make_tenant(api)
    officer = await tenant.team.for_role("security_officer")
    auditor = await tenant.team.user("auditor")
    token = await _token(auditor)
    by_session, by_token = await _open(http, api, auditor.token), await _open(http, api, token.token)
    try:
        assert (await auditor.call("POST", "/v1/auth/logout"))[0] == 204
        status, out, _ = await auditor.as_(token.token).call("GET", "/v1/tokens")
        token_id = out["items"][-1]["token_id"]
        assert (await token.call("DELETE", f"/v1/tokens/{token_id}"))[0] == 204
        status, group, _ = await officer.call("POST", "/v1/groups", json=GROUP)
        assert status == 201, group
        assert (await _next_event(by_session))[0] == "end"  # not the group event: the session is over
        assert (await _next_event(by_token))[0] == "end"
    finally:
        by_session.close()
        by_token.close()


async def test_a_stream_sends_only_what_its_credential_may_read(api, http):
    tenant = await make_tenant(api)
    officer = await tenant.team.for_role("security_officer")
    agent = await BareAgent.enroll(tenant, api)
    stream = await _open(http, api, tenant.team.admin.token)  # a tenant admin: devices, not policies
    try:
        status, out, _ = await officer.call("PUT", f"/v1/policies/{tenant.policy_id}",
                                            json={**json.loads(json.dumps(POLICY)), "name": "eu-volumes-2"})
        assert status == 200, out
        status, out, _ = await officer.call("POST", f"/v1/devices/{agent.device_id}/revoke", json={"reason": "lost"})
        assert status == 200, out
        kind, data = await _next_event(stream)
        assert kind == "device.revoked" and data["device_id"] == agent.device_id, (kind, data)
    finally:
        stream.close()


POLICY = {
    "disclose": "reasons",
    "rules": [{"id": "eu-only", "effect": "allow",
               "when": {"fact": "identity.region", "op": "in", "value": ["eu-west-1"]}}],
}


async def test_strongroom_events_tail_stops_when_its_session_ends(api, stack, capsys):
    from services.gateway.notifications import NOTIFIER
    from strongroom.cli import main

    team = await make_team(api)
    auditor = await team.user("auditor")
    notifier = stack.runner.app[NOTIFIER]
    tail = asyncio.create_task(asyncio.to_thread(main, ["--url", api.url, "--token", auditor.token, "events", "tail"]))
    for _ in range(300):
        if notifier._subscribers:  # the stream is open
            break
        await asyncio.sleep(0.05)
    assert notifier._subscribers
    assert (await auditor.call("POST", "/v1/auth/logout"))[0] == 204
    assert await asyncio.wait_for(tail, 30) == 1
    assert "ended the stream" in capsys.readouterr().err
