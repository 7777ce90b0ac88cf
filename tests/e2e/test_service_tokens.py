"""Service-account tokens through the gateway: a token for an account holding a custodian or
approver role exists only once a second admin confirms it, its secret goes to the requesting admin
alone, and the audit names both the service account and the admins behind its token."""

from __future__ import annotations

import base64

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from .helpers import audit_records_until, make_team, put_confirmed_settings


async def _custodian_service_account(team, username: str = "ci-bot") -> str:
    """A service account holding key_custodian, its grant confirmed by the second admin."""
    status, bot, _ = await team.admin.call("POST", "/v1/users", json={
        "username": username, "account": "service", "roles": ["key_custodian"]})
    assert status == 201 and bot["pending_roles"][0]["role"] == "key_custodian", bot
    status, done, _ = await team.second_admin.call("POST", f"/v1/users/{bot['user_id']}/roles/key_custodian/confirm")
    assert status == 200 and done["roles"] == ["key_custodian"], done
    return bot["user_id"]


def _rsa_public_der() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    der = key.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return base64.b64encode(der).decode()


async def test_one_admin_cannot_export_a_key_through_a_custodian_service_account(api):
    team = await make_team(api)
    bot_id = await _custodian_service_account(team)

    status, out, _ = await team.admin.call("POST", "/v1/tokens", json={"name": "ci", "service_account_id": bot_id})
    secret = out.get("token")
    if secret is not None:  # the attack: one admin holds a custodian's credential
        bot = api.as_(secret)
        status, key, _ = await bot.call("POST", "/v1/keys", json={"name": "exfil", "exportable": True})
        if status == 201:
            status, exported, _ = await bot.call("POST", f"/v1/keys/{key['key_id']}/export",
                                                 json={"public_key": _rsa_public_der()})
        assert status >= 400, "one admin created and exported a key through a custodian service account"
    assert status == 202 and secret is None and out["status"] == "pending", out

    # Nothing the requester alone can do makes the token exist.
    token_id = out["token_id"]
    status, refused, _ = await team.admin.call("POST", f"/v1/token-requests/{token_id}/confirm")
    assert status == 403 and "cannot also confirm" in refused["detail"], refused
    status, refused, _ = await team.admin.call("POST", f"/v1/token-requests/{token_id}/collect")
    assert status == 409, refused
    status, listed, _ = await team.admin.call("GET", "/v1/tokens")
    assert token_id not in {t["token_id"] for t in listed["items"]}


async def test_a_confirmed_service_token_goes_to_its_requester_and_the_audit_names_both_admins(api):
    team = await make_team(api)
    admin, second = team.admin, team.second_admin
    bot_id = await _custodian_service_account(team)
    status, pending, _ = await admin.call("POST", "/v1/tokens", json={"name": "ci", "service_account_id": bot_id})
    assert status == 202, pending
    token_id = pending["token_id"]
    status, listed, _ = await second.call("GET", "/v1/token-requests")
    assert status == 200 and [r["token_id"] for r in listed["items"]] == [token_id], listed
    assert listed["items"][0]["minted_by"] == admin.user_id

    status, confirmed, _ = await second.call("POST", f"/v1/token-requests/{token_id}/confirm")
    assert status == 200 and confirmed["status"] == "confirmed" and "token" not in confirmed, confirmed
    # The confirming admin never receives the secret; only the requester collects it, once.
    status, refused, _ = await second.call("POST", f"/v1/token-requests/{token_id}/collect")
    assert status == 403, refused
    status, minted, _ = await admin.call("POST", f"/v1/token-requests/{token_id}/collect")
    assert status == 201 and minted["token_id"] == token_id and minted["token"].startswith("sr_svc"), minted
    status, again, _ = await admin.call("POST", f"/v1/token-requests/{token_id}/collect")
    assert status == 404, again

    bot = api.as_(minted["token"])
    status, me, _ = await bot.call("GET", "/v1/me")
    assert status == 200 and me["user_id"] == bot_id, me
    assert me["auth"] == f"token+minted_by:{admin.user_id}+confirmed_by:{second.user_id}", me
    status, key, _ = await bot.call("POST", "/v1/keys", json={"name": "ci-key"})
    assert status == 201, key

    records = await audit_records_until(admin, lambda rs: any(
        r["action"] == "key.created" and r["resource"]["id"] == key["key_id"] for r in rs))
    by_action = {r["action"]: r for r in records if r["resource"]["id"] in (token_id, key["key_id"])}
    assert by_action["token.requested"]["details"]["minted_by"] == admin.user_id
    assert by_action["token.confirmed"]["actor"]["id"] == second.user_id
    created = by_action["token.created"]["details"]
    assert (created["user_id"], created["minted_by"], created["confirmed_by"]) == (bot_id, admin.user_id, second.user_id)
    # A request made with the token names the service account and the admins behind it.
    actor = by_action["key.created"]["actor"]
    assert actor["kind"] == "service" and actor["id"] == bot_id and admin.user_id in actor["auth"], actor


async def test_a_token_minted_before_a_custodian_grant_stops_working_once_it_is_confirmed(api):
    team = await make_team(api)
    status, bot, _ = await team.admin.call("POST", "/v1/users", json={"username": "builder", "account": "service",
                                                                      "roles": ["auditor"]})
    assert status == 201, bot
    status, tok, _ = await team.admin.call("POST", "/v1/tokens", json={"name": "ci", "service_account_id": bot["user_id"]})
    assert status == 201, tok  # no custodian or approver role: one admin suffices
    status, me, _ = await api.as_(tok["token"]).call("GET", "/v1/me")
    assert status == 200 and me["auth"] == f"token+minted_by:{team.admin.user_id}", me

    status, out, _ = await team.admin.call("POST", f"/v1/users/{bot['user_id']}/roles", json={"grant": ["key_custodian"]})
    assert status == 200, out
    status, out, _ = await team.second_admin.call("POST", f"/v1/users/{bot['user_id']}/roles/key_custodian/confirm")
    assert status == 200, out
    # Confirming the role did not confirm who holds the account's token.
    status, _, _ = await api.as_(tok["token"]).call("POST", "/v1/keys", json={"name": "late"})
    assert status == 401


async def test_a_service_account_never_holds_roles_kept_apart_even_in_small_team_mode(api):
    team = await make_team(api)
    await put_confirmed_settings(team, {"small_team": True})
    for roles in (["tenant_admin", "key_custodian"], ["tenant_admin", "approver"]):
        status, out, _ = await team.admin.call("POST", "/v1/users", json={
            "username": "robot", "account": "service", "roles": roles})
        assert status == 422 and "separation of duties" in out["detail"], out
    status, bot, _ = await team.admin.call("POST", "/v1/users", json={
        "username": "robot", "account": "service", "roles": ["tenant_admin"]})
    assert status == 201, bot
    status, out, _ = await team.admin.call("POST", f"/v1/users/{bot['user_id']}/roles", json={"grant": ["approver"]})
    assert status == 422 and "separation of duties" in out["detail"], out
