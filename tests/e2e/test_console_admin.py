"""The console's admin screens in Debian's Chromium over the real stack: policies (versions, a diff
showing the changed rule, a dry run gaining a device/key pair), audit (search, the chain verified,
an export through the API's own export), users and roles (a pending grant refused to the admin who
granted it and confirmed by the second admin, which the API then shows), roles that may not open a
screen refused with 403 and without its nav entry, and no Content-Security-Policy violation.

Screenshots go to `artifacts/console/` (or $STRONGROOM_ARTIFACTS/console), ignored by git."""

from __future__ import annotations

import json
from types import SimpleNamespace
from urllib.parse import urlsplit

from playwright.async_api import expect

from .helpers import ALLOW_EU, EU_FACTS, BareAgent, address, audit_records_until, make_tenant
from .test_console import ARTIFACTS, WAIT_MS, Console, browser, code  # noqa: F401  (browser: the fixture)

NARROWED = {**ALLOW_EU, "rules": [{**ALLOW_EU["rules"][0], "id": "eu-central-only", "when": {"all": [
    {"fact": "identity.region", "op": "in", "value": ["eu-central-1"]},
    {"fact": "integrity.firewall_enabled", "op": "equals", "value": True}]}}]}


async def with_session(console: Console, person, path: str):
    """Opens `path` with the person's API session as the console cookie (a console session is an
    API session): the admins enrolled their TOTP moments ago, and their step-up needs the next code."""
    host = urlsplit(console.url).hostname
    await console.context.add_cookies([{"name": "sr_console", "value": person.token, "domain": host,
                                        "path": "/console", "httpOnly": True, "sameSite": "Strict"}])
    page, response = await console.page(path)
    assert response.status == 200
    return page


async def test_console_policies_audit_users_and_guards(api, browser, stack):  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tenant = await make_tenant(api)
    s = SimpleNamespace(api=api, browser=browser, tenant=tenant, team=tenant.team, messages=[])
    await _policies(s)
    await _users_and_roles(s)
    await _audit(s)
    await _roles_refused(s)
    csp = [m for m in s.messages if "Content Security Policy" in m or "Content-Security-Policy" in m]
    assert csp == [], csp
    assert not [m for m in s.messages if m.startswith("pageerror")], s.messages


async def _policies(s: SimpleNamespace) -> None:
    """A request allowed under version 1, the policy narrowed in version 2; the console lists both,
    shows the changed rule in the diff, and the dry run of version 1 gains the pair back."""
    tenant, team = s.tenant, s.team
    agent = await BareAgent.enroll(tenant, s.api)
    status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 200, out
    status, put, _ = await tenant.admin.call("PUT", f"/v1/policies/{tenant.policy_id}", json=NARROWED)
    assert status == 200 and put["version"] == 2, put
    officer = await team.user("security_officer", username="sofia", enrol_step=-1)
    c = await Console.open(s.browser, s.api.url, s.messages)
    page = await c.sign_in(tenant.tenant_id, officer, "sofia")
    await expect(page.locator("header nav")).to_contain_text("Policies")
    await page.click("header nav a[href='/console/policies']")
    row = page.locator(f"#policy-{tenant.policy_id}")
    await expect(row).to_contain_text("eu-volumes")
    await expect(row.locator("td").nth(4)).not_to_contain_text("usr_")  # who changed it, by name
    await expect(row.locator("td").nth(2)).to_have_text("2")
    await page.screenshot(path=str(ARTIFACTS / "policies.png"), full_page=True)
    await row.locator("a").click()
    await expect(page.locator("#versions tbody tr")).to_have_count(2)
    diff = page.locator("#diff")
    await expect(diff.locator(".removed")).to_contain_text(['"id": "eu-only"', '"eu-west-1"'])
    await expect(diff.locator(".added")).to_contain_text(['"id": "eu-central-only"'])
    await page.screenshot(path=str(ARTIFACTS / "policy-diff.png"), full_page=True)
    # The same pair compared the other way round swaps what was added and removed.
    await page.select_option("select[name=from]", "2")
    await page.select_option("select[name=to]", "1")
    await page.click("form.compare button")
    await expect(page.locator("#diff .added")).to_contain_text(['"id": "eu-only"', '"eu-west-1"'])
    # Dry run of version 1 against the current (narrowed) policy: the recorded request is gained.
    await page.click("#version-1 a.dry-run")
    await expect(page.locator("#summary .count")).to_have_text("1", timeout=WAIT_MS)
    await expect(page.locator("#gained")).to_contain_text(tenant.key_id)
    await expect(page.locator("#lost")).to_contain_text("Nothing.")
    await expect(page.locator("#changes tbody tr")).to_have_count(1)
    await page.screenshot(path=str(ARTIFACTS / "policy-dry-run.png"), full_page=True)
    status, sim, _ = await tenant.admin.call("POST", "/v1/policies/simulate", json={
        "policy": {k: v for k, v in ALLOW_EU.items()}, "policy_id": tenant.policy_id, "recorded_days": 7})
    assert status == 200 and sim["changed"] == 1 and sim["gained"][0]["key_id"] == tenant.key_id, sim
    # Bad or unknown references are pages naming the problem, with the console's headers.
    for path, status in ((f"/console/policies/{tenant.policy_id}?from=x", 400), ("/console/policies/pol_nope", 404),
                         (f"/console/policies/{tenant.policy_id}/simulate?version=9", 404)):
        response = await page.goto(s.api.url + path)
        assert response.status == status and response.headers["x-frame-options"] == "DENY", path
        await expect(page.locator("main .error")).not_to_be_empty()


async def _users_and_roles(s: SimpleNamespace) -> None:
    """A pending approver grant: the admin who granted it is refused (the API's rule), the second
    admin's wrong step-up code confirms nothing, their current one confirms it, and the API shows
    the role in effect."""
    team = s.team
    status, paula, _ = await team.admin.call("POST", "/v1/users", json={
        "username": "paula", "roles": ["approver"], "email": address("paula", team.name)})
    assert status == 201 and [p["role"] for p in paula["pending_roles"]] == ["approver"], paula
    first = await Console.open(s.browser, s.api.url, s.messages)
    page = await with_session(first, team.admin, "/console/users")
    grant = page.locator(f"#grant-{paula['user_id']}-approver")
    await expect(grant).to_contain_text("paula")
    await grant.locator("input[name=totp]").fill(code(team.admin, 1))
    await grant.locator("button").click()
    await expect(page.locator("#notice .error")).to_contain_text("cannot also confirm it")
    status, still, _ = await team.admin.call("GET", f"/v1/users/{paula['user_id']}")
    assert status == 200 and still["roles"] == [] and still["pending_roles"], still
    second = await Console.open(s.browser, s.api.url, s.messages)
    page = await with_session(second, team.second_admin, "/console/users")
    await page.screenshot(path=str(ARTIFACTS / "users-pending.png"), full_page=True)
    # Step-up: a wrong code confirms nothing.
    grant = page.locator(f"#grant-{paula['user_id']}-approver")
    await grant.locator("input[name=totp]").fill("000000" if code(team.second_admin, 1) != "000000" else "111111")
    await grant.locator("button").click()
    await expect(page.locator("#notice .error")).to_contain_text("wrong or was already used")
    status, still, _ = await team.admin.call("GET", f"/v1/users/{paula['user_id']}")
    assert status == 200 and still["roles"] == [], still
    grant = page.locator(f"#grant-{paula['user_id']}-approver")
    await grant.locator("input[name=totp]").fill(code(team.second_admin, 1))
    await grant.locator("button").click()
    # Post/Redirect/Get: the confirmation lands on the users page by GET, so a reload repeats nothing.
    await page.wait_for_url(f"**/console/users?confirmed=approver&user={paula['user_id']}")
    await expect(page.locator("#notice .flash")).to_contain_text("approver is now in effect for paula")
    assert (await page.reload()).request.method == "GET"
    await expect(page.locator("#notice .flash")).to_contain_text("approver is now in effect for paula")
    await expect(page.locator("#no-pending")).to_be_visible()
    await expect(page.locator(f"#user-{paula['user_id']} .roles")).to_have_text("approver")
    await page.screenshot(path=str(ARTIFACTS / "users.png"), full_page=True)
    status, done, _ = await team.admin.call("GET", f"/v1/users/{paula['user_id']}")
    assert status == 200 and done["roles"] == ["approver"] and done["pending_roles"] == [], done
    # A crafted link cannot make the page claim a role that is not in effect.
    await page.goto(f"{s.api.url}/console/users?confirmed=tenant_admin&user={paula['user_id']}")
    await expect(page.locator("#notice .flash")).to_have_count(0)
    # A change without the session's CSRF token is refused and changes nothing.
    session = next(c["value"] for c in await second.context.cookies() if c["name"] == "sr_console")
    async with s.api.session.post(f"{s.api.url}/console/users/{paula['user_id']}/roles/approver/confirm",
                                  headers={"Cookie": f"sr_console={session}"}) as refused:
        assert refused.status == 403
    s.admin_page, s.paula = page, paula


async def _audit(s: SimpleNamespace) -> None:
    """The auditor searches the trail, sees the chain verified, and exports through the API's export."""
    tenant, team = s.tenant, s.team
    await team.user("auditor", username="audrey")

    def confirmed(records: list[dict]) -> list[dict]:
        return [r for r in records if r["action"] == "user.role_confirmed"]

    # The search shows what auditsvc holds once paula's confirmation (the newest) has landed there.
    landed = confirmed(await audit_records_until(tenant.admin, lambda records: any(
        (r.get("resource") or {}).get("id") == s.paula["user_id"] for r in confirmed(records))))
    c = await Console.open(s.browser, s.api.url, s.messages)
    page = await c.sign_in(tenant.tenant_id, SimpleNamespace(totp_secret=None), "audrey")
    await page.click("header nav a[href='/console/audit']")
    await expect(page.locator("#verdict .verdict-ok")).to_have_text("Chain verified")
    status, head, _ = await tenant.admin.call("GET", "/v1/audit/status")
    assert status == 200, head
    assert int(await page.locator("#chain .seq").text_content()) >= 1
    await page.fill("input[name=action]", "user.role_confirmed")
    await page.click("form.search button")
    rows = page.locator("#records tr.record")
    await expect(rows.first.locator(".action")).to_have_text("user.role_confirmed", timeout=WAIT_MS)
    await expect(rows).to_have_count(len(landed))
    for action in await rows.locator(".action").all_text_contents():
        assert action == "user.role_confirmed"
    await expect(rows.last.locator(".actor")).to_have_text("second-admin")  # paula's grant, confirmed in the browser
    await page.screenshot(path=str(ARTIFACTS / "audit.png"), full_page=True)
    href = await page.locator("a.export", has_text="jsonl").get_attribute("href")
    assert "action=user.role_confirmed" in href and "format=jsonl" in href
    exported = await page.request.get(s.api.url + href)
    assert exported.status == 200 and exported.headers["content-type"].startswith("application/x-ndjson")
    lines = [json.loads(line) for line in (await exported.text()).splitlines() if line]
    assert lines and len(lines) == await rows.count(), lines
    missing = await page.goto(s.api.url + "/console/audit/export?format=nope")
    assert missing.status == 400
    await expect(page.locator("main .error")).to_contain_text("format")
    # A bad filter is named, not a 500.
    bad = await page.goto(s.api.url + "/console/audit?since=yesterday")
    assert bad.status == 400
    await expect(page.locator("main .error")).to_contain_text("since")
    s.auditor_page = page


async def _roles_refused(s: SimpleNamespace) -> None:
    """An approver sees none of these screens: no nav entry, and 403 when asked anyway; an auditor
    sees the users but no Confirm button."""
    await expect(s.auditor_page.locator("header nav")).to_contain_text("Users")
    await s.auditor_page.goto(s.api.url + "/console/users")
    await expect(s.auditor_page.locator(f"#user-{s.paula['user_id']}")).to_contain_text("approver")
    await expect(s.auditor_page.locator("#pending button")).to_have_count(0)
    approver = await s.team.user("approver", username="alex", enrol_step=-1)
    c = await Console.open(s.browser, s.api.url, s.messages)
    page = await c.sign_in(s.tenant.tenant_id, approver, "alex")
    nav = page.locator("header nav")
    for label in ("Policies", "Audit", "Users"):
        await expect(nav).not_to_contain_text(label)
    for path in ("/console/policies", f"/console/policies/{s.tenant.policy_id}", "/console/audit",
                 "/console/audit/export?format=jsonl", "/console/users"):
        response = await page.goto(s.api.url + path)
        assert response.status == 403, path
    await expect(page.locator("h1")).to_have_text("Not allowed")
    await page.screenshot(path=str(ARTIFACTS / "admin-forbidden.png"), full_page=True)
