"""`strongroom account login|logout`, `mfa enrol|confirm` and the output formats against the stack:
a tenant named at sign-in, the session kept in a 0600 profile file, and a missing MFA enrolment
answered with what to do rather than a bare 403."""

from __future__ import annotations

import io
import json
import os
import re
from pathlib import Path

import aiohttp
import yaml

from shared.problem_types import MFA_REQUIRED

from .helpers import ALLOW_EU, PASSWORD, accept_invitation, address, make_team, provider_admin
from .test_policy_cli import run


async def test_sign_in_by_tenant_name_profiles_mfa_hint_and_output_formats(api, capsys, monkeypatch, tmp_path):
    team = await make_team(api, "globex")
    email = address("sol", "globex")
    status, user, _ = await team.admin.call("POST", "/v1/users", json={
        "username": "sol", "roles": ["security_officer"], "email": email})
    assert status == 201, user
    status, _, _ = await team.second_admin.call("POST", f"/v1/users/{user['user_id']}/roles/security_officer/confirm")
    assert status == 200
    await accept_invitation(api, email)

    # Signed in by the tenant's name; the session goes to the profile's 0600 file, not the screen.
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, out, err = await run(capsys, "--url", api.url, "--profile", "sol", "account", "login", "--tenant", "globex",
                               "--username", "sol", "--password-stdin")
    assert code == 0 and "profile sol" in out and "enrol" in err, (out, err)
    stored = Path(os.environ["STRONGROOM_CONFIG_DIR"]) / "profiles" / "sol.json"
    profile = json.loads(stored.read_text())
    assert stored.stat().st_mode & 0o777 == 0o600 and profile["tenant_id"] == team.tenant_id
    assert profile["token"] not in out + err and profile["url"] == api.url

    # Before enrolling, a security officer's command says what to do; the problem has its own type.
    code, _, err = await run(capsys, "--profile", "sol", "policy", "list")
    assert code == 1 and "enrol MFA first: strongroom mfa enrol" in err, err
    status, problem, _ = await api.as_(profile["token"]).call("GET", "/v1/policies")
    assert status == 403 and problem["type"] == MFA_REQUIRED, problem
    # A refusal MFA would not lift stays a plain 403 (a security officer never manages users).
    status, problem, _ = await api.as_(profile["token"]).call("GET", "/v1/users")
    assert status == 403 and problem["type"] == "about:blank", problem

    secret = tmp_path / "sol.totp"
    code, out, _ = await run(capsys, "--profile", "sol", "mfa", "enrol", "--secret-file", str(secret))
    assert code == 0 and secret.stat().st_mode & 0o777 == 0o600 and secret.read_text().strip() not in out
    code, out, _ = await run(capsys, "--profile", "sol", "mfa", "confirm", "--secret-file", str(secret))
    assert code == 0 and "recovery codes" in out
    policy = tmp_path / "policy.json"
    policy.write_text(json.dumps({**ALLOW_EU, "name": "p1"}))
    code, out, _ = await run(capsys, "--profile", "sol", "policy", "put", str(policy))
    assert code == 0 and "name: p1" in out, out
    code, out, _ = await run(capsys, "--profile", "sol", "--output", "yaml", "policy", "list")
    assert code == 0 and [p["name"] for p in yaml.safe_load(out)["items"]] == ["p1"], out
    code, out, _ = await run(capsys, "--profile", "sol", "policy", "list")
    assert code == 0 and out.splitlines()[0].split()[:2] == ["ID", "NAME"] and "p1" in out

    # Signing out ends the session and forgets it in the profile.
    code, out, _ = await run(capsys, "--profile", "sol", "account", "logout")
    assert code == 0 and "token" not in json.loads(stored.read_text())
    code, _, err = await run(capsys, "--profile", "sol", "policy", "list")
    assert code == 2 and "strongroom account login" in err


async def test_a_tenant_name_resolves_only_for_sign_in_and_only_when_one_tenant_bears_it(api, capsys, monkeypatch):
    provider = await provider_admin(api)
    for n in (1, 2):
        status, body, _ = await provider.call("POST", "/v1/tenants", json={
            "name": "twin", "admin_email": address(f"admin{n}", "twin")})
        assert status == 201, body
    status, solo, _ = await provider.call("POST", "/v1/tenants", json={"name": "solo", "admin_email": address("admin", "solo")})
    await accept_invitation(api, address("admin", "solo"))
    anonymous = api.as_(None)

    async def login(tenant: str) -> tuple[int, dict]:
        status, body, _ = await anonymous.call("POST", "/v1/auth/login", json={
            "tenant": tenant, "username": "admin", "password": PASSWORD})
        return status, body

    # An unknown name answers exactly like a wrong password; a name two tenants bear is refused
    # naming the field and saying what to do, never guessed and never naming the tenants.
    ambiguous, unknown = await login("twin"), await login("no-such-tenant")
    assert unknown[0] == 401
    assert ambiguous[0] == 422 and ambiguous[1]["field"] == "tenant", ambiguous
    assert "more than one tenant bears this name" in ambiguous[1]["detail"] and "ten_" not in str(ambiguous[1])
    # The CLI says so too, and keeps no profile.
    monkeypatch.setattr("sys.stdin", io.StringIO(PASSWORD + "\n"))
    code, out, err = await run(capsys, "--url", api.url, "--profile", "twin", "account", "login", "--tenant", "twin",
                               "--username", "admin", "--password-stdin")
    assert code != 0 and "more than one tenant bears this name" in err, (code, out, err)
    assert not (Path(os.environ["STRONGROOM_CONFIG_DIR"]) / "profiles" / "twin.json").exists()
    # And the console's sign-in: the password form and single sign-on alike.
    jar = aiohttp.CookieJar(unsafe=True)
    async with aiohttp.ClientSession(cookie_jar=jar) as browser:
        async with browser.get(api.url + "/console/login") as resp:
            pre = re.search(r'name="csrf_token" value="([^"]+)"', await resp.text()).group(1)
        form = {"csrf_token": pre, "tenant": "twin", "username": "admin", "password": PASSWORD}
        async with browser.post(api.url + "/console/login", data=form, allow_redirects=False) as resp:
            assert resp.status == 422 and "more than one tenant bears this name" in await resp.text()
            assert "sr_console" not in resp.cookies
        for path in ("/console/login?tenant=twin", "/console/sso/start?tenant=twin"):
            async with browser.get(api.url + path, allow_redirects=False) as resp:
                assert resp.status == 422 and "more than one tenant bears this name" in (await resp.text()).lower()
    by_name, by_id = await login("solo"), await login(solo["tenant_id"])
    assert by_name[0] == by_id[0] == 201 and by_name[1]["tenant_id"] == solo["tenant_id"]
    # The name is for signing in only: no route lists or looks up tenants without a provider credential.
    status, _, _ = await api.as_(by_name[1]["session_token"]).call("GET", "/v1/tenants")
    assert status == 403
