"""SAML 2.0 single sign-on against a local IdP the test starts: AuthnRequest by redirect, signed
Response by form post, group-to-role mapping, and refusals (tampered, misaddressed, expired,
replayed, unsigned, malformed or hostile XML) that leave every account as it was."""

from __future__ import annotations

import asyncio
import base64

import pytest

from .helpers import audit_records, make_team, put_confirmed_settings
from .saml_idp import LocalSamlIdp, form_fields, query_of


@pytest.fixture
async def idp():
    provider = LocalSamlIdp()
    await provider.start()
    yield provider
    await provider.stop()


async def _to_idp(api, tenant_id: str) -> str:
    async with api.session.get(api.url + f"/v1/auth/saml/start?tenant={tenant_id}", allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return resp.headers["Location"]


async def _post(api, action: str, fields: dict[str, str]):
    async with api.session.post(action, data=fields, allow_redirects=False) as resp:
        return resp.status, await resp.json(content_type=None)


async def _saml_login(api, tenant_id: str):
    """As a browser would: to the IdP, then its auto-posted form to our ACS."""
    async with api.session.get(await _to_idp(api, tenant_id), allow_redirects=False) as resp:
        assert resp.status == 200, await resp.text()
        action, fields = form_fields(await resp.text())
    status, body = await _post(api, action, fields)
    return status, body, (action, fields)


async def _users(team):
    status, users, _ = await team.admin.call("GET", "/v1/users")
    assert status == 200, users
    return {u["username"]: u for u in users["items"]}


async def test_saml_login_maps_groups_to_roles_and_refuses_replays(api, idp):
    team = await make_team(api)
    mapping = {"sec-team": ["security_officer"], "auditors": ["auditor"]}
    await put_confirmed_settings(team, {"sso": idp.settings(mapping)})
    async with api.session.get(api.url + f"/v1/auth/saml/metadata?tenant={team.tenant_id}") as resp:
        assert resp.status == 200 and "/v1/auth/saml/acs" in await resp.text()
    status, session, posted = await _saml_login(api, team.tenant_id)
    assert status == 201 and session["auth"] == "saml" and session["roles"] == ["security_officer"], session
    sam = api.as_(session["session_token"])
    status, me, _ = await sam.call("GET", "/v1/me")
    assert me["username"] == "saml-sam" and me["source"] == "saml" and me["effective_roles"] == ["security_officer"]
    assert (await sam.call("POST", "/v1/enrollment-tokens", json={"name": "vm"}))[0] == 201
    # The same form posted again: its request was answered already.
    assert (await _post(api, *posted))[0] == 401
    # The same assertion id under a fresh request (an IdP bug or a captured assertion): refused.
    idp.assertion_id = "_a-fixed"
    assert (await _saml_login(api, team.tenant_id))[0] == 201
    assert (await _saml_login(api, team.tenant_id))[0] == 401
    idp.assertion_id = None
    # Groups change at the IdP: roles follow at the next sign-in.
    idp.user = {**idp.user, "groups": ["auditors"]}
    status, session, _ = await _saml_login(api, team.tenant_id)
    assert status == 201 and session["roles"] == ["auditor"], session
    for _ in range(100):  # login events are published straight to the bus: wait for all four
        records = await audit_records(team.admin)
        saml = [r for r in records if r["action"].startswith("user.log") and r["details"].get("method") == "saml"]
        if len(saml) >= 4:
            break
        await asyncio.sleep(0.05)
    assert sorted({r["action"] for r in saml}) == ["user.logged_in", "user.login_failed"], saml
    assert any(r["reasons"] == ["replayed assertion"] or r["details"].get("reason") == "replayed assertion" for r in saml)


async def test_saml_refusals_change_no_account(api, idp):
    team = await make_team(api)
    mapping = {"sec-team": ["security_officer"], "admins!!": ["tenant_admin"], "greedy": ["tenant_admin", "approver"]}
    await put_confirmed_settings(team, {"sso": idp.settings(mapping)})
    before = await _users(team)
    for knob, value in [("tamper", True), ("audience", "https://someone-else.test"), ("sign", "none"),
                        ("in_response_to", "_not-our-request")]:
        setattr(idp, knob, value)
        status, out, _ = await _saml_login(api, team.tenant_id)
        assert status == 401 and out["detail"] == "missing or invalid credentials", (knob, out)
        setattr(idp, knob, LocalSamlIdp().__dict__[knob])
    from datetime import timedelta

    idp.age = timedelta(minutes=10)
    assert (await _saml_login(api, team.tenant_id))[0] == 401
    idp.age = timedelta(0)
    idp.user = {**idp.user, "groups": ["greedy"]}  # separation of duties holds for mapped roles too
    status, out, _ = await _saml_login(api, team.tenant_id)
    assert status == 403 and "separation of duties" in out["detail"], out
    # Malformed and hostile XML: a clear 400 naming the field.
    hostile = {
        b"<samlp:Response": "well-formed",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY e SYSTEM "file:///etc/passwd">]><r>&e;</r>': "DTD",
        b'<?xml version="1.0"?><!DOCTYPE r [<!ENTITY a "aaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;">]><r>&b;</r>': "DTD",
    }
    for raw, reason in hostile.items():
        location = await _to_idp(api, team.tenant_id)
        fields = {"SAMLResponse": base64.b64encode(raw).decode(), "RelayState": query_of(location)["RelayState"]}
        status, out = await _post(api, api.url + "/v1/auth/saml/acs", fields)
        assert status == 400 and out["field"] == "SAMLResponse" and reason in out["detail"], out
    status, out = await _post(api, api.url + "/v1/auth/saml/acs", {"RelayState": "x"})
    assert status == 400 and out["field"] == "SAMLResponse", out
    status, out = await _post(api, api.url + "/v1/auth/saml/acs", {"SAMLResponse": "eA==", "RelayState": "unknown"})
    assert status == 401, out
    assert await _users(team) == before  # nothing created, no role changed
    # A tenant without SAML, or a SAML config missing its certificate: 404 / 422 naming the field.
    async with api.session.get(api.url + "/v1/auth/saml/start?tenant=ten_nope", allow_redirects=False) as resp:
        assert resp.status == 404 and (await resp.json(content_type=None))["field"] == "tenant"
    bad = {**idp.settings(mapping), "idp_certificate_pem": "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----"}
    status, out, _ = await team.admin.call("PUT", "/v1/tenant/settings", json={"sso": bad})
    assert status == 422 and out["field"].startswith("sso") and "idp_certificate_pem" in out["detail"], out
