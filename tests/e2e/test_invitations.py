"""Identities the creator does not control: invitations (setup secrets) go to the invitee by
e-mail, never to the creating admin; admin and security-officer grants wait for a second, already
active admin; every admin hears of every new admin and every role grant; an SSO-only tenant has
no setup secrets at all."""

from __future__ import annotations

from .helpers import PASSWORD, make_team


async def test_an_admin_cannot_mint_a_second_admin_it_controls(api):
    """The attack: a tenant admin creates "dave" with tenant_admin, sets dave up with the setup
    token the creation answered, and confirms a custodian grant for a third account as dave."""
    team = await make_team(api)
    admin = team.admin
    status, dave, _ = await admin.call("POST", "/v1/users", json={
        "username": "dave", "roles": ["tenant_admin"], "email": "dave@acme.example"})
    assert status == 201, dave
    assert "setup_token" not in dave  # the secret goes to dave's mailbox, never to the creator
    status, carol, _ = await admin.call("POST", "/v1/users", json={
        "username": "carol", "roles": ["key_custodian"], "email": "carol@acme.example"})
    assert status == 201, carol
    # Whatever the creator holds, it signs in as nobody but itself.
    token = dave.get("setup_token", "sr_setup_" + "x" * 43)
    status, _, _ = await api.as_(None).call("POST", "/v1/auth/setup", json={"setup_token": token, "password": PASSWORD})
    assert status == 401
    status, login, _ = await api.as_(None).call("POST", "/v1/auth/login", json={
        "tenant": team.tenant_id, "username": "dave", "password": PASSWORD})
    assert status == 401, login
