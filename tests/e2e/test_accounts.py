"""Accounts through the gateway: bootstrap once, separation of duties, second-admin
confirmation, TOTP (replay refused), recovery codes, lockout, tokens with scopes and expiry,
rate limits, tenant lifecycle, and bad input that changes nothing."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pyotp
import pytest

from .helpers import (
    EU_FACTS,
    PASSWORD,
    BareAgent,
    accept_invitation,
    address,
    audit_records,
    make_team,
    make_tenant,
    provider_admin,
    put_confirmed_settings,
    sign_in,
)


async def records_with(admin, *actions: str) -> list[dict]:
    """The tenant's audit records once every named action has landed (10 s at most)."""
    for _ in range(100):
        records = await audit_records(admin)
        if set(actions) <= {r["action"] for r in records}:
            return records
        await asyncio.sleep(0.1)
    raise AssertionError(f"audit records {actions} never landed")


async def test_bootstrap_creates_the_provider_admin_once(api):
    provider = await provider_admin(api)
    status, me, _ = await provider.call("GET", "/v1/me")
    assert status == 200 and me["roles"] == ["provider_admin"] and me["auth"] == "password+totp"
    status, out, _ = await api.call("POST", "/v1/auth/bootstrap", json={"username": "again", "password": PASSWORD})
    assert status == 401, out  # the bootstrap credential is disabled once the first admin exists


async def test_separation_of_duties_and_second_admin_confirmation(api):
    team = await make_team(api)
    admin, second = team.admin, team.second_admin
    # One user may not manage people and hold keys or approvals.
    for roles in (["tenant_admin", "key_custodian"], ["tenant_admin", "approver"]):
        status, out, _ = await admin.call("POST", "/v1/users", json={"username": "greedy", "roles": roles,
                                                                     "email": address("greedy")})
        assert status == 422 and out["field"] == "roles" and "separation of duties" in out["detail"], out
    # A custodian grant is pending until a second admin (not the granter) confirms it.
    status, carol, _ = await admin.call("POST", "/v1/users", json={"username": "carol", "roles": ["key_custodian"],
                                                                    "email": address("carol")})
    assert status == 201 and carol["roles"] == [] and carol["pending_roles"][0]["role"] == "key_custodian", carol
    await accept_invitation(api, address("carol"))
    carol_api = await sign_in(api, "carol", tenant=team.tenant_id)
    status, _, _ = await carol_api.call("POST", "/v1/keys", json={"name": "early"})
    assert status == 403
    status, out, _ = await admin.call("POST", f"/v1/users/{carol['user_id']}/roles/key_custodian/confirm")
    assert status == 403 and "granted" in out["detail"], out
    status, out, _ = await second.call("POST", f"/v1/users/{carol['user_id']}/roles/key_custodian/confirm")
    assert status == 200 and out["roles"] == ["key_custodian"], out
    status, key, _ = await carol_api.call("POST", "/v1/keys", json={"name": "now"})
    assert status == 201, key
    # Tenant admin cannot touch keys; nobody grants themselves roles.
    status, _, _ = await admin.call("POST", "/v1/keys", json={"name": "admin-key"})
    assert status == 403
    status, out, _ = await admin.call("POST", f"/v1/users/{admin.user_id}/roles", json={"grant": ["auditor"]})
    assert status == 422 and "themselves" in out["detail"], out
    # The key's audit record names carol's user id, whatever credential she used.
    records = await records_with(second, "key.created", "user.role_confirmed")
    created = next(r for r in records if r["action"] == "key.created")
    assert created["actor"]["id"] == carol["user_id"] and created["actor"]["auth"] == "password+totp"
    assert {"user.created", "user.role_confirmed", "user.logged_in", "user.mfa_enrolled"} <= {r["action"] for r in records}


async def test_small_team_mode_needs_a_second_person_for_every_change(api):
    team = await make_team(api)
    # Turning small-team mode on waits for a second admin; the requester cannot confirm it.
    status, out, _ = await team.admin.call("PUT", "/v1/tenant/settings", json={"small_team": True})
    assert status == 202 and out["pending_change"]["shown"] == {"small_team": True}, out
    change_id = out["pending_change"]["change_id"]
    status, out, _ = await team.admin.call("GET", "/v1/tenant/settings")
    assert out["small_team"] is False and [c["change_id"] for c in out["pending_changes"]] == [change_id], out
    status, out, _ = await team.admin.call("POST", f"/v1/tenant/settings/changes/{change_id}/confirm")
    assert status == 403 and "cannot also confirm" in out["detail"], out
    status, out, _ = await team.second_admin.call("POST", f"/v1/tenant/settings/changes/{change_id}/confirm")
    assert status == 200 and out["small_team"] is True and out["pending_changes"] == [], out
    status, out, _ = await team.second_admin.call("POST", f"/v1/tenant/settings/changes/{change_id}/confirm")
    assert status == 404 and out["field"] == "change_id", out  # applied once
    records = await records_with(team.admin, "tenant.settings_change_pending", "tenant.settings_changed")
    confirmed = next(r for r in records if r["action"] == "tenant.settings_changed")
    assert confirmed["actor"]["id"] == team.second_admin.user_id and confirmed["details"]["requested_by"] == team.admin.user_id
    assert next(r for r in records if r["action"] == "tenant.settings_change_pending")["outcome"] == "pending"
    both = await team.user("tenant_admin", "key_custodian", username="both")
    status, out, _ = await both.call("POST", "/v1/keys", json={"name": "pair"})
    assert status == 428 and "second person" in out["detail"], out
    change = {"X-Strongroom-Change": out["change_id"]}
    status, out, _ = await both.call("POST", f"/v1/changes/{change['X-Strongroom-Change']}/confirm")
    assert status == 403, out  # the same person twice is not two people
    custodian = await team.user("key_custodian")
    status, out, _ = await custodian.call("POST", f"/v1/changes/{change['X-Strongroom-Change']}/confirm")
    assert status == 200, out
    status, key, _ = await both.call("POST", "/v1/keys", json={"name": "pair"}, headers=change)
    assert status == 201, key  # the co-signed change (tests/e2e/test_cosign_changes.py has the rest)
    status, _, _ = await both.call("GET", "/v1/keys")
    assert status == 200  # reading needs no second person
    status, out, _ = await team.admin.call("PUT", "/v1/tenant/settings", json={"small_team": False})
    assert status == 409, out


async def test_totp_login_replay_recovery_codes(api):
    team = await make_team(api)
    officer = await team.user("security_officer", username="olga")
    login = {"tenant": team.tenant_id, "username": "olga", "password": PASSWORD}
    anon = api.as_(None)
    status, out, _ = await anon.call("POST", "/v1/auth/login", json=login)
    assert status == 401 and out["detail"] == "missing or invalid credentials" and "field" not in out, out
    code = pyotp.TOTP(officer.totp_secret).at(datetime.now(UTC) + timedelta(seconds=30))
    status, out, _ = await anon.call("POST", "/v1/auth/login", json={**login, "totp": code})
    assert status == 201 and out["auth"] == "password+totp", out
    status, out, _ = await anon.call("POST", "/v1/auth/login", json={**login, "totp": code})
    assert status == 401, out  # a replayed code is refused
    recovery = officer.recovery_codes[0]
    status, out, _ = await anon.call("POST", "/v1/auth/login", json={**login, "recovery_code": recovery})
    assert status == 201 and out["auth"] == "password+recovery_code", out
    session = api.as_(out["session_token"])
    assert (await session.call("POST", "/v1/enrollment-tokens", json={"name": "vm"}))[0] == 201
    status, out, _ = await anon.call("POST", "/v1/auth/login", json={**login, "recovery_code": recovery})
    assert status == 401, out  # single use
    # Logout ends the session.
    assert (await session.call("POST", "/v1/auth/logout"))[0] == 204
    assert (await session.call("GET", "/v1/me"))[0] == 401
    records = await records_with(team.admin, "user.login_failed", "user.recovery_code_used", "user.logged_out")
    failed = [r for r in records if r["action"] == "user.login_failed"]
    assert failed and all(r["outcome"] == "failure" for r in failed)
    assert any(r["action"] == "user.recovery_code_used" for r in records)


async def test_lockout_after_failures_without_revealing_who_exists(api, stack, mongo_client, db_prefix):
    team = await make_team(api)
    await team.user("auditor", username="ann")
    anon = api.as_(None)
    for username in ("ann", "nobody-here"):
        statuses = []
        for _ in range(5):
            status, out, _ = await anon.call("POST", "/v1/auth/login", json={"tenant": team.tenant_id, "username": username, "password": "wrong-password-123"})
            statuses.append((status, out["detail"]))
        assert statuses == [(401, "missing or invalid credentials")] * 5
        async with anon.session.post(anon.url + "/v1/auth/login", json={"tenant": team.tenant_id, "username": username, "password": PASSWORD}) as resp:
            assert resp.status == 429 and int(resp.headers["Retry-After"]) > 0
            detail = (await resp.json(content_type=None))["detail"]
        assert detail == "too many failed sign-ins; retry later"  # the same for real and unknown users
    # When the lock expires, the right password works again.
    await mongo_client[f"{db_prefix}gateway"]["sign_in_failures"].update_many(
        {"tenant_id": team.tenant_id}, {"$set": {"locked_until": datetime.now(UTC) - timedelta(seconds=1)}})
    status, out, _ = await anon.call("POST", "/v1/auth/login", json={"tenant": team.tenant_id, "username": "ann", "password": PASSWORD})
    assert status == 201, out


async def test_tokens_carry_the_user_scopes_expiry_and_revocation(api, mongo_client, db_prefix):
    tenant = await make_tenant(api)
    custodian = tenant.team.by_role["key_custodian"]
    status, tok, _ = await custodian.call("POST", "/v1/tokens", json={"name": "ci", "scopes": ["keys.read"]})
    assert status == 201 and tok["user_id"] == custodian.user_id and tok["token"].startswith("sr_pat_"), tok
    scoped = api.as_(tok["token"])
    assert (await scoped.call("GET", "/v1/keys"))[0] == 200
    assert (await scoped.call("POST", "/v1/keys", json={"name": "nope"}))[0] == 403
    status, out, _ = await scoped.call("POST", "/v1/tokens", json={"name": "wider"})
    assert status == 403, out  # a scoped token never mints a broader one
    status, out, _ = await custodian.call("POST", "/v1/tokens", json={"name": "x", "scopes": ["users.manage"]})
    assert status == 422 and out["field"] == "scopes", out
    status, me, _ = await scoped.call("GET", "/v1/me")
    assert me["user_id"] == custodian.user_id and me["auth"] == "token" and me["scopes"] == ["keys.read"]
    # Listed without the secret; revoked -> 401.
    status, listed, _ = await custodian.call("GET", "/v1/tokens")
    assert [t["token_id"] for t in listed["items"]] == [tok["token_id"]] and "digest" not in listed["items"][0]
    assert (await custodian.call("DELETE", f"/v1/tokens/{tok['token_id']}"))[0] == 204
    assert (await scoped.call("GET", "/v1/keys"))[0] == 401
    # Expiry.
    status, tok2, _ = await custodian.call("POST", "/v1/tokens", json={"name": "short", "expires_in_seconds": 60})
    assert status == 201
    await mongo_client[f"{db_prefix}gateway"]["tokens"].update_one(
        {"token_id": tok2["token_id"]}, {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    fresh = api.as_(tok2["token"])
    assert (await fresh.call("GET", "/v1/keys"))[0] == 401
    # Malformed bearer credentials: 401, nothing else.
    for bad in ("", "sr_ses_garbage", "x" * 600, "sr_pat_" + "A" * 43):
        assert (await api.as_(bad).call("GET", "/v1/keys"))[0] == 401


async def test_bad_passwords_and_setup_tokens_change_nothing(api):
    team = await make_team(api)
    status, dave, _ = await team.admin.call("POST", "/v1/users", json={"username": "dave", "roles": ["auditor"],
                                                                        "email": address("dave")})
    dave["setup_token"] = api.mailbox.setup_token(address("dave"))  # as dave, from his mailbox
    anon = api.as_(None)
    for password, field in (("short", "password"), ("y" * 200, "password"), ("password1234", "password"), ("x" * 2000, "password")):
        status, out, ctype = await anon.call("POST", "/v1/auth/setup", json={"setup_token": dave["setup_token"], "password": password})
        assert status == 422 and out["field"] == field and ctype.startswith("application/problem+json"), out
        assert password not in out["detail"]
    status, out, _ = await anon.call("POST", "/v1/auth/setup", json={"setup_token": "sr_setup_forged-token", "password": PASSWORD})
    assert status == 401
    status, user, _ = await team.admin.call("GET", f"/v1/users/{dave['user_id']}")
    assert user["password_set"] is False
    status, _, _ = await anon.call("POST", "/v1/auth/setup", json={"setup_token": dave["setup_token"], "password": PASSWORD})
    assert status == 200
    status, _, _ = await anon.call("POST", "/v1/auth/setup", json={"setup_token": dave["setup_token"], "password": PASSWORD})
    assert status == 401  # one-time
    for body, field in (({"tenant": team.tenant_id, "username": "dave"}, "password"),
                        ({"tenant": team.tenant_id, "username": "dave", "password": "p" * 300}, "password"),
                        ({"tenant": team.tenant_id, "username": "dave", "password": PASSWORD, "totp": "12ab"}, "totp"),
                        ({"username": "dave", "password": PASSWORD}, "tenant")):
        status, out, _ = await anon.call("POST", "/v1/auth/login", json=body)
        assert status == 422 and out["field"] == field, (body, out)
    status, out, _ = await team.admin.call("POST", "/v1/users", json={"username": "Bad Name!", "roles": [],
                                                                       "email": address("bad")})
    assert status == 422 and out["field"] == "username"


@pytest.mark.stack(gateway={"login_rate_burst": 3, "login_rate_per_second": 0.01,
                            "agent_rate_burst_per_device": 2, "agent_rate_per_second_per_device": 0.01})
async def test_rate_limits_answer_429_with_retry_after(api):
    anon = api.as_(None)
    statuses = []
    for _ in range(4):
        async with anon.session.post(anon.url + "/v1/auth/login", json={"tenant": "t", "username": "u", "password": "p" * 12}) as resp:
            statuses.append((resp.status, resp.headers.get("Retry-After")))
    assert [s for s, _ in statuses] == [401, 401, 401, 429] and int(statuses[-1][1]) >= 1


@pytest.mark.stack(gateway={"agent_rate_burst_per_device": 2, "agent_rate_per_second_per_device": 0.01})
async def test_agent_requests_are_rate_limited_per_device(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    statuses = [(await agent.request(tenant.key_id, EU_FACTS))[0] for _ in range(3)]
    assert statuses == [200, 200, 429]


async def test_provider_suspends_resumes_and_offboards_tenants(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    provider = await provider_admin(api)
    status, listed, _ = await provider.call("GET", "/v1/tenants")
    assert status == 200 and listed["items"][0]["usage"]["devices"] == 1, listed
    assert (await provider.call("POST", f"/v1/tenants/{tenant.tenant_id}/suspend"))[0] == 200
    assert (await tenant.admin.call("GET", "/v1/keys"))[0] == 401
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 401
    assert (await provider.call("POST", f"/v1/tenants/{tenant.tenant_id}/suspend"))[0] == 409
    assert (await provider.call("POST", f"/v1/tenants/{tenant.tenant_id}/resume"))[0] == 200
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    assert (await provider.call("POST", f"/v1/tenants/{tenant.tenant_id}/offboard"))[0] == 200
    assert (await tenant.admin.call("GET", "/v1/audit"))[0] == 401
    assert (await provider.call("POST", "/v1/tenants/ten_nothere/suspend"))[0] == 404
    assert (await provider.call("POST", "/v1/tenants/provider/suspend"))[0] == 404


@pytest.mark.stack(gateway={"deployment": "enterprise", "enterprise_tenant_name": "acme-dc"})
async def test_enterprise_bootstrap_creates_the_single_tenant_and_its_admin(api):
    status, out, _ = await api.call("POST", "/v1/auth/bootstrap", json={"username": "root", "password": PASSWORD})
    assert status == 201 and out["roles"] == ["tenant_admin"] and out["tenant_id"].startswith("ten_"), out
    admin = await sign_in(api, "root")  # no tenant needed in enterprise mode
    status, me, _ = await admin.call("GET", "/v1/me")
    assert me["tenant_id"] == out["tenant_id"] and me["effective_roles"] == ["tenant_admin"]
    assert (await admin.call("POST", "/v1/tenants", json={"name": "other"}))[0] == 403
    assert (await api.call("POST", "/v1/auth/bootstrap", json={"username": "x", "password": PASSWORD}))[0] == 401


async def test_totp_and_sso_client_secrets_are_sealed_in_the_store(api, stack, mongo_client):
    """The store holds TOTP secrets and the OIDC client secret only sealed under the gateway's
    data key, bound to tenant and owner: neither appears in any gateway document."""
    team = await make_team(api)
    sso = {"protocol": "oidc", "issuer": "https://idp.test", "client_id": "strongroom",
           "client_secret": "very-secret-client-value", "authorization_endpoint": "https://idp.test/a",
           "token_endpoint": "https://idp.test/t", "jwks_uri": "https://idp.test/j", "group_roles": {}}
    out = await put_confirmed_settings(team, {"sso": sso})
    assert "client_secret" not in out["sso"], out
    db = mongo_client[f"{stack.gateway_settings.db_prefix}gateway"]
    users = await db["users"].find({"tenant_id": team.tenant_id}).to_list(None)
    enrolled = [u for u in users if (u.get("mfa") or {}).get("confirmed")]
    assert {u["user_id"] for u in enrolled} == {team.admin.user_id, team.second_admin.user_id}
    for user in enrolled:
        person = team.admin if user["user_id"] == team.admin.user_id else team.second_admin
        assert user["mfa"]["secret"].startswith("sealed:v1:")
        assert person.totp_secret not in str(user)
    tenant = await db["tenants"].find_one({"tenant_id": team.tenant_id})
    assert tenant["settings"]["sso"]["client_secret"].startswith("sealed:v1:")
    dump = ""
    for name in await db.list_collection_names():
        dump += "".join(str(d) for d in await db[name].find({}).to_list(None))
    assert "very-secret-client-value" not in dump and team.admin.totp_secret not in dump
    # The sealed secret still works: a TOTP sign-in (next step's code: this step's was used at enrolment).
    code = pyotp.TOTP(team.second_admin.totp_secret).at(datetime.now(UTC) + timedelta(seconds=30))
    status, out, _ = await api.as_(None).call("POST", "/v1/auth/login", json={
        "tenant": team.tenant_id, "username": "second-admin", "password": PASSWORD, "totp": code})
    assert status == 201 and out["auth"] == "password+totp", out


async def test_mfa_reset_needs_a_second_admin_and_ends_the_users_sessions(api):
    team = await make_team(api)
    officer = await team.user("security_officer", username="lost-phone")
    path = f"/v1/users/{officer.user_id}/mfa/reset"
    status, out, _ = await team.admin.call("POST", f"/v1/users/{team.admin.user_id}/mfa/reset")
    assert status == 422 and out["field"] == "user_id", out  # never one's own
    status, out, _ = await team.admin.call("POST", path + "/confirm")
    assert status == 404, out  # nothing pending yet
    status, out, _ = await team.admin.call("POST", path)
    assert status == 202 and out["mfa_reset"]["requested_by"] == team.admin.user_id, out
    status, out, _ = await team.admin.call("POST", path + "/confirm")
    assert status == 403 and "requested a reset" in out["detail"], out
    status, out, _ = await officer.call("POST", path + "/confirm")
    assert status == 403, out  # not an admin
    assert (await officer.call("GET", "/v1/me"))[0] == 200  # nothing changed yet
    status, out, _ = await team.second_admin.call("POST", path + "/confirm")
    assert status == 200 and out["mfa_enrolled"] is False, out
    assert (await officer.call("GET", "/v1/me"))[0] == 401  # the old session ended
    # Password alone now signs in, with enrolment required before any officer power.
    status, out, _ = await api.as_(None).call("POST", "/v1/auth/login", json={
        "tenant": team.tenant_id, "username": "lost-phone", "password": PASSWORD})
    assert status == 201 and out["mfa_enrolment_required"] is True, out
    again = api.as_(out["session_token"])
    assert (await again.call("POST", "/v1/enrollment-tokens", json={"name": "vm"}))[0] == 403
    await records_with(team.admin, "user.mfa_reset_pending", "user.mfa_reset")


async def test_password_change_needs_current_password_and_totp(api):
    team = await make_team(api)
    officer = await team.user("security_officer", username="olga")
    new = "harbour-lantern-quartz-5512"
    code = pyotp.TOTP(officer.totp_secret).at(datetime.now(UTC) + timedelta(seconds=30))
    for body, field in [({"current_password": "wrong-password-1234", "new_password": new, "totp": code}, "current_password"),
                        ({"current_password": PASSWORD, "new_password": new}, "totp"),
                        ({"current_password": PASSWORD, "new_password": new, "totp": "000000"}, "totp")]:
        status, out, _ = await officer.call("POST", "/v1/me/password", json=body)
        assert status == 403 and out["field"] == field, (body, out)
    status, out, _ = await officer.call("POST", "/v1/me/password", json={
        "current_password": PASSWORD, "new_password": "short", "totp": code})
    assert status == 422 and out["field"] == "password", out  # weak: refused before anything is checked
    status, _, _ = await officer.call("POST", "/v1/me/password", json={
        "current_password": PASSWORD, "new_password": new, "totp": code})
    assert status == 204
    assert (await officer.call("GET", "/v1/me"))[0] == 401  # every session ended
    login = {"tenant": team.tenant_id, "username": "olga", "recovery_code": officer.recovery_codes[0]}
    status, out, _ = await api.as_(None).call("POST", "/v1/auth/login", json={**login, "password": PASSWORD})
    assert status == 401, out
    status, out, _ = await api.as_(None).call("POST", "/v1/auth/login", json={**login, "password": new})
    assert status == 201, out
    # The same TOTP code again (replayed) cannot change the password a second time.
    status, out, _ = await api.as_(out["session_token"]).call("POST", "/v1/me/password", json={
        "current_password": new, "new_password": PASSWORD + "-x", "totp": code})
    assert status == 403 and out["field"] == "totp", out
    status, after, _ = await team.admin.call("GET", "/v1/users/" + officer.user_id)
    assert after["mfa_enrolled"] and after["status"] == "active"
