"""Single sign-on against a local identity provider the test starts: OIDC code flow with PKCE,
group-to-role mapping, and refusals (tampered token, wrong audience, replayed state, SoD)."""

from __future__ import annotations

import pytest

from .helpers import make_team, put_confirmed_settings
from .identity_provider import LocalOpenIdProvider


@pytest.fixture
async def idp():
    provider = LocalOpenIdProvider()
    await provider.start()
    yield provider
    await provider.stop()


async def _oidc_login(api, tenant_id: str):
    """Follows the redirects as a browser would; returns the callback's status and body."""
    s = api.session
    async with s.get(api.url + f"/v1/auth/oidc/start?tenant={tenant_id}", allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        to_idp = resp.headers["Location"]
    async with s.get(to_idp, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        callback = resp.headers["Location"]
    async with s.get(callback, allow_redirects=False) as resp:
        body = await resp.json(content_type=None)
        return resp.status, body, callback


async def test_oidc_login_maps_groups_to_roles(api, idp):
    team = await make_team(api)
    mapping = {"sec-team": ["security_officer"], "auditors": ["auditor"]}
    status, out, _ = await team.admin.call("PUT", "/v1/tenant/settings", json={"sso": idp.settings(mapping)})
    assert status == 202 and "client_secret" not in str(out) and out["pending_change"]["shown"]["sso"]["group_roles"] == mapping
    # Until a second admin confirms, the tenant has no single sign-on.
    async with api.session.get(api.url + f"/v1/auth/oidc/start?tenant={team.tenant_id}", allow_redirects=False) as resp:
        assert resp.status == 404
    status, out, _ = await team.second_admin.call(
        "POST", f"/v1/tenant/settings/changes/{out['pending_change']['change_id']}/confirm")
    assert status == 200 and "client_secret" not in out["sso"], out
    status, session, callback = await _oidc_login(api, team.tenant_id)
    assert status == 201 and session["auth"] == "oidc" and session["roles"] == ["security_officer"], session
    olga = api.as_(session["session_token"])
    status, me, _ = await olga.call("GET", "/v1/me")
    assert me["username"] == "sso-olga" and me["source"] == "oidc" and me["auth"] == "oidc"
    assert (await olga.call("POST", "/v1/enrollment-tokens", json={"name": "vm"}))[0] == 201
    # The state is single use: the same callback again is refused.
    async with api.session.get(callback, allow_redirects=False) as resp:
        assert resp.status == 401
    # Groups change at the provider: roles follow at the next sign-in.
    idp.user = {**idp.user, "groups": ["auditors"]}
    status, session, _ = await _oidc_login(api, team.tenant_id)
    assert status == 201 and session["roles"] == ["auditor"], session


async def test_oidc_refuses_tampered_tokens_wrong_audience_and_sod_violations(api, idp):
    team = await make_team(api)
    mapping = {"sec-team": ["security_officer"], "admins!!": ["tenant_admin"], "greedy": ["tenant_admin", "approver"]}
    await put_confirmed_settings(team, {"sso": idp.settings(mapping)})
    idp.tamper = True
    status, out, _ = await _oidc_login(api, team.tenant_id)
    assert status == 401, out
    idp.tamper, idp.audience = False, "someone-else"
    status, out, _ = await _oidc_login(api, team.tenant_id)
    assert status == 401, out
    idp.audience, idp.user = None, {**idp.user, "groups": ["greedy"]}
    status, out, _ = await _oidc_login(api, team.tenant_id)
    assert status == 403 and "separation of duties" in out["detail"], out
    status, users, _ = await team.admin.call("GET", "/v1/users")
    assert all(u["source"] != "oidc" for u in users["items"])  # no account was created or changed
    # Unknown tenant or a tenant without SSO: 404 naming the field.
    async with api.session.get(api.url + "/v1/auth/oidc/start?tenant=ten_nope", allow_redirects=False) as resp:
        assert resp.status == 404 and (await resp.json(content_type=None))["field"] == "tenant"
    async with api.session.get(api.url + "/v1/auth/oidc/callback?state=x", allow_redirects=False) as resp:
        assert resp.status == 400 and (await resp.json(content_type=None))["field"] == "code"
