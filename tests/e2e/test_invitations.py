"""Identities the creator does not control: invitations (setup secrets) go to the invitee by
e-mail over real SMTP, never to the creating admin; admin and security-officer grants wait for a
second, already active admin; every admin hears of every new admin and every role grant; an
SSO-only tenant has no setup secrets at all; invitations go only to allowed e-mail domains."""

from __future__ import annotations

import asyncio

import pytest

from .helpers import (
    PASSWORD,
    accept_invitation,
    address,
    make_team,
    provider_admin,
    put_confirmed_settings,
    second_provider_admin,
    sign_in,
)
from .identity_provider import LocalOpenIdProvider
from .test_sso import _oidc_login


async def _invite(admin, username: str, *roles: str, email: str | None = None) -> dict:
    status, out, _ = await admin.call("POST", "/v1/users", json={
        "username": username, "roles": list(roles), "email": email or address(username)})
    assert status == 201, out
    return out


async def test_an_admin_cannot_mint_a_second_admin_it_controls(api):
    """The attack: a tenant admin creates "dave" with tenant_admin, sets dave up with the setup
    token the creation answered, and confirms a custodian grant for a third account as dave."""
    team = await make_team(api)
    admin = team.admin
    dave = await _invite(admin, "dave", "tenant_admin")
    assert "setup_token" not in dave and dave["invitation"] == "sent", dave
    assert dave["roles"] == [] and [p["role"] for p in dave["pending_roles"]] == ["tenant_admin"]
    carol = await _invite(admin, "carol", "key_custodian")
    # Whatever the creator holds, it signs in as nobody but itself.
    token = dave.get("setup_token", "sr_setup_" + "x" * 43)
    status, _, _ = await api.as_(None).call("POST", "/v1/auth/setup", json={"setup_token": token, "password": PASSWORD})
    assert status == 401
    status, login, _ = await api.as_(None).call("POST", "/v1/auth/login", json={
        "tenant": team.tenant_id, "username": "dave", "password": PASSWORD})
    assert status == 401, login
    # The token went to dave's own mailbox and nowhere else.
    dave_token = api.mailbox.setup_token(address("dave"))
    assert [m["To"] for m in api.mailbox.all() if dave_token in m.get_content()] == [address("dave")]
    # Even the real dave, set up with his own invitation, is no admin until a second admin confirms.
    await accept_invitation(api, address("dave"))
    real_dave = await sign_in(api, "dave", tenant=team.tenant_id)
    status, out, _ = await real_dave.call("POST", f"/v1/users/{carol['user_id']}/roles/key_custodian/confirm")
    assert status == 403, out
    status, carol_now, _ = await admin.call("GET", f"/v1/users/{carol['user_id']}")
    assert carol_now["roles"] == [] and carol_now["pending_roles"], carol_now


async def test_a_pending_or_newer_admin_confirms_nothing(api):
    team = await make_team(api)
    admin, second = team.admin, team.second_admin
    carol = await _invite(admin, "carol", "key_custodian")  # requested before dave is an admin
    status, change, _ = await admin.call("PUT", "/v1/tenant/settings", json={"small_team": True})
    assert status == 202, change
    dave = await _invite(admin, "dave", "tenant_admin")
    await accept_invitation(api, address("dave"))
    dave_api = await sign_in(api, "dave", tenant=team.tenant_id)
    # Pending: dave holds no admin role yet, so he confirms nothing.
    status, out, _ = await dave_api.call("POST", f"/v1/users/{carol['user_id']}/roles/key_custodian/confirm")
    assert status == 403, out
    # The creator cannot confirm their own grant of admin; the second, older admin can.
    status, out, _ = await admin.call("POST", f"/v1/users/{dave['user_id']}/roles/tenant_admin/confirm")
    assert status == 403, out
    status, out, _ = await second.call("POST", f"/v1/users/{dave['user_id']}/roles/tenant_admin/confirm")
    assert status == 200 and out["roles"] == ["tenant_admin"], out
    # dave's session (TOTP enrolled at his first sign-in) now carries the role.
    # Newer: dave became an admin after these were requested, so he confirms neither.
    status, out, _ = await dave_api.call("POST", f"/v1/users/{carol['user_id']}/roles/key_custodian/confirm")
    assert status == 403 and "after the request" in out["detail"], out
    change_id = change["pending_change"]["change_id"]
    status, out, _ = await dave_api.call("POST", f"/v1/tenant/settings/changes/{change_id}/confirm")
    assert status == 403 and "after the request" in out["detail"], out
    # What is requested after he became an admin, he may confirm.
    erin = await _invite(admin, "erin", "approver")
    status, out, _ = await dave_api.call("POST", f"/v1/users/{erin['user_id']}/roles/approver/confirm")
    assert status == 200 and out["roles"] == ["approver"], out
    status, out, _ = await second.call("POST", f"/v1/users/{carol['user_id']}/roles/key_custodian/confirm")
    assert status == 200, out


async def test_every_admin_is_told_of_new_admins_and_role_grants(api):
    team = await make_team(api)
    admins = [address("admin"), address("second-admin")]
    before = {a: len(api.mailbox.to(a)) for a in admins}
    sam = await _invite(team.admin, "sam", "security_officer", "auditor")
    for a in admins:
        notices = api.mailbox.to(a)[before[a]:]
        assert len(notices) == 1 and "sam" in notices[0]["Subject"], [m["Subject"] for m in notices]
        text = notices[0].get_content()
        assert "security_officer" in text and "auditor" in text and "sr_setup_" not in text
    status, out, _ = await team.second_admin.call("POST", f"/v1/users/{sam['user_id']}/roles/security_officer/confirm")
    assert status == 200, out
    status, out, _ = await team.admin.call("POST", f"/v1/users/{sam['user_id']}/roles", json={"grant": ["tenant_admin"]})
    assert status == 200 and [p["role"] for p in out["pending_roles"]] == ["tenant_admin"], out
    for a in admins:
        notices = {m["Subject"]: m.get_content() for m in api.mailbox.to(a)[before[a]:]}
        assert any("security_officer confirmed for sam" in s for s in notices), notices
        granted = next(text for s, text in notices.items() if "roles granted to sam" in s)
        assert "Waiting for a second admin: tenant_admin" in granted


async def test_an_undelivered_invitation_is_resent_with_a_new_token(api, mailbox):
    team = await make_team(api)
    mailbox.refusing = True  # the mail server takes no mail
    ivy = await _invite(team.admin, "ivy", "auditor")
    mailbox.refusing = False
    assert ivy["invitation"] == "undelivered" and not mailbox.to(address("ivy")), ivy
    status, out, _ = await team.admin.call("POST", f"/v1/users/{ivy['user_id']}/invitation")
    assert status == 200 and out["invitation"] == "sent" and "setup_token" not in out, out
    first = mailbox.setup_token(address("ivy"))
    status, out, _ = await team.admin.call("POST", f"/v1/users/{ivy['user_id']}/invitation")
    assert status == 200, out
    second = mailbox.setup_token(address("ivy"))
    assert first != second
    status, _, _ = await api.as_(None).call("POST", "/v1/auth/setup", json={"setup_token": first, "password": PASSWORD})
    assert status == 401  # the old token is void
    await accept_invitation(api, address("ivy"))
    status, out, _ = await team.admin.call("POST", f"/v1/users/{ivy['user_id']}/invitation")
    assert status == 409 and out["field"] == "user_id", out  # set up: nothing to re-send


async def test_invitations_go_only_to_allowed_domains(api):
    team = await make_team(api)
    status, out, _ = await team.admin.call("PUT", "/v1/tenant/settings", json={"allowed_email_domains": ["x"]})
    assert status == 422 and out["field"] == "allowed_email_domains", out
    settings = await put_confirmed_settings(team, {"allowed_email_domains": ["acme.example"]})
    assert settings["allowed_email_domains"] == ["acme.example"]
    status, out, _ = await team.admin.call("POST", "/v1/users", json={
        "username": "mallory", "roles": ["auditor"], "email": "mallory@evil.example"})
    assert status == 422 and out["field"] == "email" and "evil" not in out["detail"], out
    for body in ({"username": "nomail", "roles": []}, {"username": "bad", "roles": [], "email": "not-an-address"}):
        status, out, _ = await team.admin.call("POST", "/v1/users", json=body)
        assert status == 422 and out["field"] == "email", out
    assert not api.mailbox.to("mallory@evil.example")
    await _invite(team.admin, "olga", "auditor")


@pytest.fixture
async def idp():
    provider = LocalOpenIdProvider()
    await provider.start()
    yield provider
    await provider.stop()


async def test_an_sso_only_tenant_has_no_setup_secrets(api, idp):
    team = await make_team(api)
    status, out, _ = await team.admin.call("PUT", "/v1/tenant/settings", json={"sso_only": True})
    assert status == 422 and out["field"] == "sso_only", out  # single sign-on first
    await put_confirmed_settings(team, {"sso": idp.settings({"sec-team": ["security_officer"]})})
    ivan = await _invite(team.admin, "ivan", "auditor")  # invited before: his token dies with the setting
    token = api.mailbox.setup_token(address("ivan"))
    status, settings, _ = await team.admin.call("PUT", "/v1/tenant/settings", json={"sso_only": True})
    assert status == 200 and settings["sso_only"] is True, settings  # narrowing applies at once
    mails = len(api.mailbox.all())
    status, out, _ = await team.admin.call("POST", "/v1/users", json={
        "username": "nina", "roles": ["auditor"], "email": address("nina")})
    assert status == 409 and out["field"] == "account", out
    assert len(api.mailbox.all()) == mails  # no invitation, so no secret, was made
    status, _, _ = await api.as_(None).call("POST", "/v1/auth/setup", json={"setup_token": token, "password": PASSWORD})
    assert status == 401
    status, out, _ = await team.admin.call("POST", f"/v1/users/{ivan['user_id']}/invitation")
    assert status == 409, out
    # People sign in through the identity provider, created at their first sign-in.
    status, session, _ = await _oidc_login(api, team.tenant_id)
    assert status == 201 and session["auth"] == "oidc" and session["roles"] == ["security_officer"], session
    for admin in (address("admin"), address("second-admin")):  # a grant by the IdP's groups is told too
        assert any("by single sign-on" in m["Subject"] and "security_officer" in m.get_content()
                   for m in api.mailbox.to(admin))
    # Turning it off (setup secrets again) waits for a second admin.
    status, out, _ = await team.admin.call("PUT", "/v1/tenant/settings", json={"sso_only": False})
    assert status == 202 and out["pending_change"]["shown"] == {"sso_only": False}, out


async def test_the_providers_own_people_are_invited_by_mail_too(api):
    """The attack: one provider admin made a second provider admin in effect at once (at an address
    it controls), who then confirmed root-custodian grants for the first admin's puppets. A
    provider-admin grant waits for a second provider admin, as a tenant-admin grant does."""
    provider = await provider_admin(api)
    status, out, _ = await provider.call("POST", "/v1/users", json={
        "username": "pam", "roles": ["provider_admin"], "email": "pam@provider.example"})
    assert status == 201 and "setup_token" not in out and out["invitation"] == "sent", out
    assert out["roles"] == [] and [p["role"] for p in out["pending_roles"]] == ["provider_admin"], out
    await accept_invitation(api, "pam@provider.example")
    pam = await sign_in(api, "pam", tenant="provider")
    status, denied, _ = await pam.call("POST", "/v1/users", json={"username": "puppet", "roles": ["root_custodian"],
                                                                  "email": "puppet@provider.example"})
    assert status == 403, denied  # pending: no admin yet
    status, denied, _ = await provider.call("POST", f"/v1/users/{pam.user_id}/roles/provider_admin/confirm")
    assert status == 403, denied  # the granter never confirms
    status, done, _ = await (await second_provider_admin(api)).call(
        "POST", f"/v1/users/{pam.user_id}/roles/provider_admin/confirm")
    assert status == 200, done
    status, me, _ = await pam.call("GET", "/v1/me")
    assert status == 200 and me["roles"] == ["provider_admin"], me
    status, out, _ = await provider.call("POST", "/v1/tenants", json={"name": "solo"})
    assert status == 422 and out["field"] == "admin_email", out


@pytest.mark.stack(gateway={"deployment": "enterprise", "enterprise_tenant_name": "acme-dc"})
async def test_enterprise_bootstrap_invites_the_second_admin(api):
    status, out, _ = await api.call("POST", "/v1/auth/bootstrap", json={
        "username": "root", "password": PASSWORD, "email": "root@acme-dc.example",
        "second_admin_username": "dana", "second_admin_email": "dana@acme-dc.example"})
    assert status == 201 and out["second_admin"]["invitation"] == "sent" and "setup_token" not in str(out), out
    root = await sign_in(api, "root")
    await accept_invitation(api, "dana@acme-dc.example")
    dana = await sign_in(api, "dana")
    status, carol, _ = await root.call("POST", "/v1/users", json={
        "username": "carol", "roles": ["key_custodian"], "email": "carol@acme-dc.example"})
    assert status == 201, carol
    status, done, _ = await dana.call("POST", f"/v1/users/{carol['user_id']}/roles/key_custodian/confirm")
    assert status == 200 and done["roles"] == ["key_custodian"], done
    assert any("key_custodian confirmed for carol" in m["Subject"] for m in api.mailbox.to("root@acme-dc.example"))


@pytest.mark.stack(gateway={"mail_retry_seconds": 0.3})
async def test_a_notice_the_mail_server_refused_is_sent_later(api, mailbox):
    team = await make_team(api)
    admins = [address("admin"), address("second-admin")]
    mailbox.refusing = True
    tom = await _invite(team.admin, "tom", "security_officer")
    assert tom["invitation"] == "undelivered"  # an invitation is re-sent by an admin (a new token)
    await asyncio.sleep(1.0)  # retries meet a refusing server and wait
    assert not any("tom" in m["Subject"] for a in admins for m in mailbox.to(a))
    mailbox.refusing = False
    for _ in range(100):
        if all(any("new user tom" in m["Subject"] for m in mailbox.to(a)) for a in admins):
            break
        await asyncio.sleep(0.1)
    for a in admins:
        assert [m["Subject"] for m in mailbox.to(a)].count("Strongroom: new user tom") == 1, a
    assert not mailbox.to(address("tom"))  # the invitation is not retried from the store: it holds no token
