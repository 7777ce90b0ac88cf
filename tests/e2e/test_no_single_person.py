"""No single person holds the keys: starting from one admin's credentials, plus every account that
admin can create and every secret delivered to that admin, no sequence of API calls gives that
person a key release, a key export, a custodian or approver action, or a root share.

The routes tried come from the route table (see `attacker_routes`): a route added later is
covered without editing these tests. Secrets mailed to the attacker's own domain count as
delivered to it: the attacker reads every message the stack's SMTP receiver took for an address at
`attacker.example` (it controls those mailboxes), and every secret in them (an invitation's setup
token) is redeemed like any other."""

from __future__ import annotations

import time

import pytest

from services.gateway.routes import ROUTES

from .attacker import Attacker
from .attacker_routes import GOAL_PERMISSIONS, RELEASE_PERMISSION, escalation_routes, goal_routes, redemption_routes
from .helpers import make_tenant, provider_admin
from .identity_provider import LocalOpenIdProvider

# Every account the attacker creates signs in, and every secret it holds is tried as a bearer
# token: neither the sign-in rate limit nor the failed-authentication throttle (a 429 for the
# attacker's address) is what stops it here.
UNTHROTTLED = {"login_rate_burst": 100_000, "login_rate_per_second": 10_000.0,
               "auth_failure_burst": 100_000, "auth_failure_per_second": 10_000.0}


def test_the_selection_rules_pick_the_account_routes_from_the_route_table():
    escalation, goals = escalation_routes(), goal_routes()
    assert len(escalation) >= 10 and len(goals) >= 10
    assert not {r.permission for r in escalation} & (GOAL_PERMISSIONS | {RELEASE_PERMISSION})
    # creating accounts, granting and confirming, tokens, and tenant settings are all in
    assert any(r.method == "POST" and r.body is not None and "username" in r.body.model_fields for r in escalation)
    assert any(r.body is not None and any("role" in f or "grant" in f for f in r.body.model_fields) for r in escalation)
    assert sum(r.path.endswith("/confirm") for r in escalation) >= 2
    assert any("token" in r.path for r in escalation) and any("settings" in r.path for r in escalation)
    # a delivered secret can be redeemed, and every goal permission has a route
    assert redemption_routes()
    assert {r.permission for r in goals} == GOAL_PERMISSIONS | {RELEASE_PERMISSION}
    assert all(r in ROUTES for r in escalation + goals)


def _shown(findings: list[str], limit: int = 15) -> str:
    rest = f"  ... and {len(findings) - limit} more\n" if len(findings) > limit else ""
    return "".join(f"  {f}\n" for f in findings[:limit]) + rest


def _by_mail(attacker: Attacker) -> set[str]:
    """Tenants where the attacker signed in with an invitation mailed to its own domain."""
    return {c.tenant_id for c in attacker.creds if "a mail to the attacker's domain" in c.via}


async def _customer_tenant(api):
    """A tenant set up properly by two admins: a volume key, an exportable key and a policy."""
    tenant = await make_tenant(api)
    status, key, _ = await tenant.admin.call("POST", "/v1/keys", json={"name": "exportable", "exportable": True})
    assert status == 201, key
    return tenant, (tenant.key_id, key["key_id"])


async def _goal_check_works(api, tenant, key_ids) -> None:
    """The goal check itself can fail: the tenant's real custodian and security officer (each
    made by two admins) export a key and get one released through the very same probes."""
    control = Attacker(api)
    control.target(*key_ids)
    for role in ("key_custodian", "security_officer"):
        await control.adopt(await tenant.team.for_role(role), f"the tenant's real {role}")
    findings = await control.goal_findings(only=frozenset({"keys.export", RELEASE_PERMISSION}), probe_held=True)
    assert any("/export -> 200" in f for f in findings), findings
    assert any("released to a device" in f for f in findings), findings


@pytest.fixture
async def idp():
    """The attacker's own identity provider."""
    provider = LocalOpenIdProvider()
    await provider.start()
    yield provider
    await provider.stop()


@pytest.mark.stack(gateway=UNTHROTTLED)
async def test_one_tenant_admin_alone_never_gets_a_key_or_a_custody_action(api, idp):
    tenant, key_ids = await _customer_tenant(api)
    await _goal_check_works(api, tenant, key_ids)
    started = time.monotonic()
    attacker = Attacker(api, idp=idp)
    attacker.target(*key_ids)
    attacker.seed("policy_id", tenant.policy_id)
    # the first admin's own session; the second admin is another person, never used here
    await attacker.adopt(tenant.team.admin, "the attacker's own tenant-admin session")
    rounds = await attacker.escalate()
    findings = await attacker.goal_findings()
    assert len(attacker.creds) >= 1 and attacker.calls > 100
    assert _by_mail(attacker), attacker.report()  # invitees at its own domain: accounts it set up
    assert not findings, (f"{len(findings)} findings after {rounds} rounds, {attacker.calls} calls, "
                          f"{time.monotonic() - started:.1f} s:\n" + _shown(findings) + attacker.report())


@pytest.mark.stack(gateway=UNTHROTTLED)
async def test_the_search_finds_nothing_for_someone_who_manages_no_one(api, idp):
    """The other half of the control: the same search from an auditor's session (who creates no
    account and changes no setting) ends with no finding, so a finding above is the admin's."""
    tenant, key_ids = await _customer_tenant(api)
    attacker = Attacker(api, idp=idp)
    attacker.target(*key_ids)
    await attacker.adopt(await tenant.team.for_role("auditor"), "an auditor's own session")
    rounds = await attacker.escalate()
    findings = await attacker.goal_findings()
    assert attacker.calls > 20 and not findings, _shown(findings) + attacker.report()
    assert rounds <= 3 and len({c.user_id for c in attacker.creds}) == 1, attacker.report()


@pytest.mark.stack(gateway=UNTHROTTLED)
@pytest.mark.timeout(900)  # the longest search in the suite (75 s on a quiet box); 300 s was cut short under load
async def test_the_provider_admin_alone_never_gets_a_root_share_or_a_tenant_key(api, idp):
    tenant, key_ids = await _customer_tenant(api)
    provider = await provider_admin(api)
    started = time.monotonic()
    attacker = Attacker(api, idp=idp)
    attacker.target(*key_ids)
    attacker.seed("tenant_id", tenant.tenant_id)
    own = await attacker.adopt(provider, "the provider admin's own session")
    assert own is not None
    rounds = await attacker.escalate()
    # A customer tenant the provider admin creates during the search is its own from creation (the
    # provider names a tenant's first admins and their addresses, trusted at creation: README, "What
    # remains to trust"), and nobody else's key is in it. In the tenants that existed before, the
    # customer's and the provider's own (where custody.root is a root custodian's, made by two
    # provider admins, never one's puppet), any goal permission is a finding; anywhere, a root share.
    existing = {tenant.tenant_id, own.tenant_id}
    assert _by_mail(attacker) & {own.tenant_id}, attacker.report()  # its own provider invitees, signed in
    findings = await attacker.goal_findings(tenant_ok=lambda tenant_id: tenant_id not in existing)
    assert not findings, (f"{len(findings)} findings after {rounds} rounds, {attacker.calls} calls, "
                          f"{time.monotonic() - started:.1f} s:\n" + _shown(findings) + attacker.report())
