"""Console single sign-on against the local OpenID provider and SAML IdP the API's SSO tests use:
"Sign in with <provider>" found by tenant name, finished into the console's session cookie in
Debian's Chromium (OIDC by redirect, SAML by the IdP's form post and the console's hand-over page,
no CSP violation); then, over HTTP, the protections: a state started in another browser (login
CSRF), the API's and the console's states not interchangeable, a state used twice, a tenant
without single sign-on.

Screenshots go to `artifacts/console/` (or $STRONGROOM_ARTIFACTS/console), ignored by git."""

from __future__ import annotations

import urllib.parse

import aiohttp
import pytest
from playwright.async_api import expect

from .helpers import make_team, put_confirmed_settings
from .identity_provider import LocalOpenIdProvider
from .saml_idp import LocalSamlIdp, form_fields
from .test_console import ARTIFACTS, WAIT_MS, Console, browser  # noqa: F401  (the Chromium fixture)

ROLES = {"sec-team": ["security_officer"]}


@pytest.fixture
async def idps():
    oidc, saml = LocalOpenIdProvider(), LocalSamlIdp()
    await oidc.start()
    await saml.start()
    yield oidc, saml
    await saml.stop()
    await oidc.stop()


async def _me(api, context) -> dict:
    """The console cookie's session, asked of the API as a bearer token (the same kind of session)."""
    cookie = next(c for c in await context.cookies() if c["name"] == "sr_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"].startswith("sr_ses_")
    status, me, _ = await api.as_(cookie["value"]).call("GET", "/v1/me")
    assert status == 200, me
    return me


async def test_console_sign_in_with_oidc_and_saml(api, browser, idps):  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    oidc, saml = idps
    north, south = await make_team(api, "northwind"), await make_team(api, "southwind")
    await put_confirmed_settings(north, {"sso": oidc.settings(ROLES)})
    await put_confirmed_settings(south, {"sso": saml.settings(ROLES)})
    messages: list[str] = []

    # OIDC, the tenant found by its name: the button names the provider; the provider's redirect
    # back ends in a console session for the account the API's SSO makes.
    c = await Console.open(browser, api.url, messages)
    page, _ = await c.page("/console/login")
    await page.fill("#sso input[name=tenant]", "northwind")
    await page.click("#sso button")
    await expect(page.locator("#sso-start")).to_have_text("Sign in with 127.0.0.1 (OIDC)")
    await page.screenshot(path=str(ARTIFACTS / "sign-in-sso.png"), full_page=True)
    await page.click("#sso-start")
    await page.wait_for_url("**/console/overview", timeout=WAIT_MS)
    await expect(page.locator("header form.who")).to_contain_text(north.tenant_id)
    await expect(page.locator("header nav")).to_contain_text("Devices")  # a security officer's screens
    me = await _me(api, c.context)
    assert me["username"] == "sso-olga" and me["auth"] == "oidc" and me["effective_roles"] == ["security_officer"], me
    assert "sr_console_sso" not in {k["name"] for k in await c.context.cookies()}
    await page.screenshot(path=str(ARTIFACTS / "overview-oidc.png"), full_page=True)

    # SAML: the IdP posts its form to the console, whose own page posts it on with the binding cookie.
    s = await Console.open(browser, api.url, messages)
    page, _ = await s.page(f"/console/login?tenant={south.tenant_id}")
    await expect(page.locator("#sso-start")).to_contain_text("(SAML)")
    await page.click("#sso-start")
    await page.wait_for_url(saml.url + "/sso**")
    await page.evaluate("document.forms[0].submit()")  # what a real IdP's page does by script
    await page.wait_for_url("**/console/overview", timeout=WAIT_MS)
    me = await _me(api, s.context)
    assert me["username"] == "saml-sam" and me["auth"] == "saml" and me["source"] == "saml", me

    csp = [m for m in messages if "Content Security Policy" in m or "Content-Security-Policy" in m]
    assert csp == [], csp
    assert not [m for m in messages if m.startswith("pageerror")], messages
    await c.context.close()
    await s.context.close()


def _browser() -> aiohttp.ClientSession:
    return aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True))


async def _console_start(client, api, tenant: str) -> str:
    """The console's start: the provider URL it redirects to (the binding cookie kept in `client`)."""
    async with client.get(api.url + f"/console/sso/start?tenant={tenant}", allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        assert "SameSite=Lax" in resp.headers["Set-Cookie"] and "HttpOnly" in resp.headers["Set-Cookie"]
        return resp.headers["Location"]


async def _provider_redirect(client, url: str) -> str:
    async with client.get(url, allow_redirects=False) as resp:
        assert resp.status == 302, await resp.text()
        return resp.headers["Location"]


def _signed_in(client) -> bool:
    return any(c.key == "sr_console" and c.value for c in client.cookie_jar)


async def test_console_sso_refuses_other_browsers_and_crossed_states(api, idps):
    oidc, saml = idps
    north, south = await make_team(api, "northwind"), await make_team(api, "southwind")
    await put_confirmed_settings(north, {"sso": oidc.settings(ROLES)})
    await put_confirmed_settings(south, {"sso": saml.settings(ROLES)})
    async with _browser() as attacker, _browser() as victim:
        # Login CSRF: the attacker's own completed sign-in, opened in the victim's browser, is refused.
        callback = await _provider_redirect(attacker, await _console_start(attacker, api, north.tenant_id))
        async with victim.get(callback, allow_redirects=False) as resp:
            assert resp.status == 401 and "Single sign-on failed" in await resp.text()
        assert not _signed_in(victim)
        # The state was spent by that attempt: the attacker cannot use it either.
        async with attacker.get(callback, allow_redirects=False) as resp:
            assert resp.status == 401
        # A console state is refused by the API's callback, and the API's state by the console's.
        callback = await _provider_redirect(attacker, await _console_start(attacker, api, north.tenant_id))
        async with attacker.get(api.url + "/v1/auth/oidc/callback?" + urllib.parse.urlsplit(callback).query) as resp:
            assert resp.status == 401
        async with attacker.get(api.url + f"/v1/auth/oidc/start?tenant={north.tenant_id}", allow_redirects=False) as resp:
            api_callback = await _provider_redirect(attacker, resp.headers["Location"])
        await _console_start(attacker, api, north.tenant_id)  # a binding cookie of the console's own
        async with attacker.get(api.url + "/console/sso/oidc/callback?" + urllib.parse.urlsplit(api_callback).query,
                                allow_redirects=False) as resp:
            assert resp.status == 401
        assert not _signed_in(attacker)
        # The real flow in one browser works, and its session cookie is the console's.
        callback = await _provider_redirect(victim, await _console_start(victim, api, "northwind"))
        async with victim.get(callback, allow_redirects=False) as resp:
            assert resp.status == 200 and 'http-equiv="refresh"' in await resp.text()
        assert _signed_in(victim)

    async with _browser() as attacker, _browser() as victim:
        # SAML: the attacker's assertion, handed to the victim's browser, is refused at the finish.
        async with attacker.get(await _console_start(attacker, api, south.tenant_id)) as resp:
            action, fields = form_fields(await resp.text())
        assert action == api.url + "/console/sso/saml/acs"
        async with victim.post(action, data=fields) as resp:  # the hand-over page, no cookie needed
            assert resp.status == 200
            hand_over, handed = form_fields(await resp.text())
        assert handed == fields and hand_over == "/console/sso/saml/finish"
        async with victim.post(api.url + hand_over, data=handed, allow_redirects=False) as resp:
            assert resp.status == 401
        assert not _signed_in(victim)
        async with victim.post(api.url + "/console/sso/saml/finish", data={"RelayState": "x"}) as resp:
            assert resp.status == 400 and "SAMLResponse" in await resp.text()
        # A tenant without single sign-on: the sign-in page says so.
        async with victim.get(api.url + "/console/sso/start?tenant=ten_nope", allow_redirects=False) as resp:
            assert resp.status == 404 and "no single sign-on" in await resp.text()
        async with victim.get(api.url + "/console/login?tenant=ten_nope") as resp:
            assert resp.status == 200 and "No single sign-on is set up" in await resp.text()
