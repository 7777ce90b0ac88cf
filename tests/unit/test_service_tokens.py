"""Service-account tokens: the pure rules (who confirms, which tokens act, what the audit names)
and the views over the in-memory store (request, confirm, collect)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from services.gateway.accounts import rules
from services.gateway.roles import CONFIRMED_ROLES, TENANT_ROLES

from . import test_gateway_views as harness

gw = harness.gw  # the views' fixture: a gateway on memory stores

NOW = datetime(2026, 1, 1, tzinfo=UTC)


def test_every_custodian_or_approver_role_needs_a_second_admin_for_a_service_token():
    assert {"key_custodian", "approver"} <= CONFIRMED_ROLES
    for role in TENANT_ROLES:
        assert rules.token_needs_second_admin(frozenset({role})) == (role in CONFIRMED_ROLES)
    assert not rules.token_needs_second_admin(frozenset())


def test_a_token_request_is_confirmed_by_an_older_person_other_than_its_requester():
    def check(confirmer_id="usr_b", person=True, since=NOW - timedelta(days=1)):
        confirmer = {"user_id": confirmer_id, "status": "active", "account": "person", "roles": ["tenant_admin"],
                     "admin_since": since, "password_hash": "$argon2id$x", "mfa": {"confirmed": True}}
        return rules.check_second_admin(confirmer=confirmer if person else None, requested_by="usr_a",
                                        requested_at=NOW, what="requested a service-account token")

    assert check().allowed
    assert "cannot also confirm" in check(confirmer_id="usr_a").reason
    assert "only a person" in check(person=False).reason
    assert "after the request" in check(since=NOW + timedelta(seconds=1)).reason


def test_an_unconfirmed_token_of_a_custodian_service_account_never_acts():
    bot = {"account": "service", "roles": ["key_custodian"]}
    assert not rules.token_may_act({"kind": "service", "created_by": "usr_a"}, bot)
    assert rules.token_may_act({"kind": "service", "created_by": "usr_a", "confirmed_by": "usr_b"}, bot)
    assert rules.token_may_act({"kind": "service", "created_by": "usr_a"}, {"account": "service", "roles": ["auditor"]})
    assert rules.token_may_act({"kind": "personal"}, {"account": "person", "roles": ["key_custodian"]})


def test_a_service_tokens_auth_names_who_minted_and_confirmed_it():
    assert rules.token_auth({"kind": "personal", "created_by": "usr_p"}) == "token"
    assert rules.token_auth({"kind": "service", "created_by": "usr_a"}) == "token+minted_by:usr_a"
    assert rules.token_auth({"kind": "service", "created_by": "usr_a", "confirmed_by": "usr_b"}) == \
        "token+minted_by:usr_a+confirmed_by:usr_b"


def test_small_team_mode_never_lets_a_service_account_hold_roles_kept_apart():
    assert rules.separation_waived(small_team=True, account="person")
    assert not rules.separation_waived(small_team=True, account="service")
    for pair in rules.CONFLICTS:
        decision, _ = rules.plan_grant(
            current=frozenset(), pending=frozenset(), grant=pair, granter_id="usr_a", target_id="usr_bot",
            small_team=rules.separation_waived(small_team=True, account="service"), known=tuple(pair))
        assert not decision.allowed and "separation of duties" in decision.reason


def test_a_service_account_may_never_hold_root_custodian():
    for grant in ({"root_custodian"}, {"root_custodian", "provider_admin"}):
        decision, _ = rules.plan_grant(current=frozenset(), pending=frozenset(), grant=frozenset(grant),
                                       granter_id="usr_a", target_id="usr_bot", small_team=False,
                                       known=rules.roles_for("provider"), account="service")
        assert not decision.allowed and "service account may never hold root_custodian" in decision.reason
    decision, plan = rules.plan_grant(current=frozenset(), pending=frozenset(), grant=frozenset({"root_custodian"}),
                                      granter_id="usr_a", target_id="usr_b", small_team=False,
                                      known=rules.roles_for("provider"), account="person")
    assert decision.allowed and plan.pending == ("root_custodian",) and plan.effective == ()


async def test_a_custodian_service_token_waits_for_a_second_admin_and_goes_to_its_requester(gw):
    await gw.tenant()
    first_id, first = await gw.user("alice", ["tenant_admin"])
    second_id, second = await gw.user("bob", ["tenant_admin"])
    bot_id, _ = await gw.user("bot", ["key_custodian"], account="service")
    _, robot = await gw.user("robot", ["tenant_admin"], account="service")

    status, pending, _ = await gw.call("POST", "/v1/tokens", first, {"name": "ci", "service_account_id": bot_id})
    assert status == 202 and "token" not in pending and pending["status"] == "pending", pending
    token_id = pending["token_id"]
    assert gw.types()[-1] == "token.requested"
    for confirmer, detail in ((first, "cannot also confirm"), (robot, "only a person")):
        status, body, _ = await gw.call("POST", f"/v1/token-requests/{token_id}/confirm", confirmer)
        assert status == 403 and detail in body["detail"], body
    status, body, _ = await gw.call("POST", f"/v1/token-requests/{token_id}/collect", first)
    assert status == 409, body

    status, body, _ = await gw.call("POST", f"/v1/token-requests/{token_id}/confirm", second)
    assert status == 200 and body["confirmed_by"] == second_id and "token" not in body, body
    status, body, _ = await gw.call("POST", f"/v1/token-requests/{token_id}/confirm", second)
    assert status == 409, body
    status, body, _ = await gw.call("POST", f"/v1/token-requests/{token_id}/collect", second)
    assert status == 403, body
    status, minted, _ = await gw.call("POST", f"/v1/token-requests/{token_id}/collect", first)
    assert status == 201 and minted["token_id"] == token_id, minted
    assert (minted["minted_by"], minted["confirmed_by"]) == (first_id, second_id)
    created = gw.published[-1]
    assert created.type == "token.created" and (created.minted_by, created.confirmed_by) == (first_id, second_id)

    status, me, _ = await gw.call("GET", "/v1/me", minted["token"])
    assert status == 200 and me["auth"] == f"token+minted_by:{first_id}+confirmed_by:{second_id}", me
    status, body, _ = await gw.call("GET", "/v1/token-requests", second)
    assert status == 200 and body["items"] == []
    status, _, _ = await gw.call("POST", f"/v1/token-requests/{token_id}/collect", first)
    assert status == 404
    assert (await gw.store.accounts.user(harness.T1, bot_id))["token_requests"] == []
