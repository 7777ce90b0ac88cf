"""The web console in Debian's Chromium (Playwright, never a downloaded browser) over the real stack:
sign-in with TOTP, a 2-of-3 approval voted from two browsers with step-up codes while the second
inbox updates live, the waiting agent receiving its key, the live stream showing the release, a
denied request explained (by policy, and by a third approver with a comment), CSRF and role
refusals, a stream ending on shutdown, and no Content-Security-Policy violation.

Screenshots go to `artifacts/console/` (or $STRONGROOM_ARTIFACTS/console), ignored by git."""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from types import SimpleNamespace

import pyotp
import pytest
from playwright.async_api import async_playwright, expect

from services.gateway.console.web import CSP

from .helpers import BareAgent, make_tenant
from .test_approvals import approval_policy, ask, opened, poll

CHROMIUM = "/usr/bin/chromium"
ARTIFACTS = Path(os.environ.get("STRONGROOM_ARTIFACTS", Path(__file__).resolve().parents[2] / "artifacts")) / "console"
WAIT_MS = 20_000  # how long the browser waits for something to appear (an outcome, not a speed claim)


def code(person, step: int = 0) -> str:
    return pyotp.TOTP(person.totp_secret).at(time.time() + 30 * step)


@pytest.fixture
async def browser():
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-background-networking", "--disable-component-update",
            "--no-first-run", "--disable-sync", "--disable-default-apps"])
        yield browser
        await browser.close()


class Console:
    """One operator's browser context, with every console message and page error it logged."""

    def __init__(self, context, url: str, messages: list[str]):
        self.context, self.url, self.messages = context, url, messages

    @classmethod
    async def open(cls, browser, url: str, messages: list[str]) -> Console:
        context = await browser.new_context(viewport={"width": 1280, "height": 900})
        return cls(context, url, messages)

    async def page(self, path: str):
        page = await self.context.new_page()
        page.on("console", lambda m: self.messages.append(f"{m.type}: {m.text}"))
        page.on("pageerror", lambda e: self.messages.append(f"pageerror: {e}"))
        response = await page.goto(self.url + path)
        return page, response

    async def sign_in(self, tenant_id: str, person, username: str):
        page, _ = await self.page("/console/login")
        await page.fill("input[name=tenant]", tenant_id)
        await page.fill("input[name=username]", username)
        await page.fill("input[name=password]", "vault-door-orchid-7291")
        if person.totp_secret:  # roles that need MFA; an auditor signs in with a password alone
            await page.fill("input[name=totp]", code(person))
        await page.click("button[type=submit].primary")
        await page.wait_for_url("**/console/overview")
        return page


class Scene(SimpleNamespace):
    """What the console scenario's phases share: the stack, the browser, the tenant and its people,
    the waiting agent and the operators' open pages."""


async def test_console_approvals_detail_stream_and_guards(api, browser, stack, http):
    s = Scene(api=api, browser=browser, stack=stack, http=http)
    await _signed_in(s)
    await _two_approvers_vote_and_the_agent_receives_its_key(s)
    await _stream_and_request_details(s)
    await _csrf_refused_and_a_third_approver_denies(s)
    await _roles_see_only_what_they_may(s)
    await _sign_out_csp_and_shutdown(s)


async def _signed_in(s: Scene) -> None:
    """A tenant whose policy asks two of three approvers, a waiting agent request, and two approvers signed in."""
    api, browser = s.api, s.browser
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tenant = await make_tenant(api, policy=approval_policy(approvals_required=2))
    team = tenant.team
    # Three approvers, enrolled with the previous step's code: the console sign-in uses the current
    # code and the vote's step-up the next one.
    alice, bob, carol = [await team.user("approver", username=name, enrol_step=-1) for name in ("alice", "bob", "carol")]
    auditor = await team.user("auditor", username="audrey")
    agent = await BareAgent.enroll(tenant, api)
    status, pending, ephemeral = await ask(agent, tenant.key_id)
    assert status == 202, pending
    approval_id, request_id = pending["approval_id"], pending["request_id"]

    messages: list[str] = []
    a = await Console.open(browser, api.url, messages)
    b = await Console.open(browser, api.url, messages)
    # Signing in with password and TOTP gives a session cookie the page's scripts cannot read.
    a_inbox = await a.sign_in(tenant.tenant_id, alice, "alice")
    b_inbox = await b.sign_in(tenant.tenant_id, bob, "bob")
    cookie = next(c for c in await a.context.cookies() if c["name"] == "sr_console")
    assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["value"].startswith("sr_ses_")
    # The overview shows an approver only the areas an approver may read.
    await expect(a_inbox.locator("#tile-approvals .big")).to_have_text("1")
    await expect(a_inbox.locator("#tile-decisions")).to_contain_text("1 sent for approval")
    await expect(a_inbox.locator("#tile-devices, #tile-audit")).to_have_count(0)
    await a_inbox.screenshot(path=str(ARTIFACTS / "overview-approver.png"), full_page=True)
    response = await a_inbox.goto(api.url + "/console/approvals")
    assert response.headers["content-security-policy"] == CSP
    assert response.headers["x-frame-options"] == "DENY"
    await b_inbox.goto(api.url + "/console/approvals")
    s.tenant, s.team, s.alice, s.bob, s.carol, s.auditor, s.agent, s.ephemeral, s.approval_id, s.request_id, s.messages, s.a, s.b, s.a_inbox, s.b_inbox = tenant, team, alice, bob, carol, auditor, agent, ephemeral, approval_id, request_id, messages, a, b, a_inbox, b_inbox


async def _two_approvers_vote_and_the_agent_receives_its_key(s: Scene) -> None:
    """The inbox, a refused step-up, two votes seen live, and the key released."""
    tenant, alice, bob, agent, ephemeral = s.tenant, s.alice, s.bob, s.agent, s.ephemeral
    approval_id, request_id, a, b, a_inbox, b_inbox = s.approval_id, s.request_id, s.a, s.b, s.a_inbox, s.b_inbox
    # The inbox: who asks for which key, the policy rule that asked, progress and time left.
    card = a_inbox.locator(f"#approval-{approval_id}")
    await expect(card).to_contain_text("vm-1", timeout=WAIT_MS)
    await expect(card).to_contain_text(tenant.key_id)
    await expect(card.locator(".rule")).to_have_text("eu-needs-approval")
    await expect(card).to_contain_text(tenant.policy_id)
    await expect(card.locator(".count")).to_have_text("0 of 2")
    await expect(card.locator("time.countdown")).to_contain_text("in ")
    stream_page, _ = await a.page("/console/stream")
    releases_only, _ = await b.page("/console/stream?kind=releases")
    await a_inbox.bring_to_front()
    b_card = b_inbox.locator(f"#approval-{approval_id}")
    await expect(b_card.locator(".count")).to_have_text("0 of 2", timeout=WAIT_MS)

    # A wrong step-up code is refused and nothing is counted.
    await card.locator("input[name=comment]").fill("change 42")
    await card.locator("input[name=totp]").fill("000000" if code(alice, 1) != "000000" else "111111")
    await card.locator("button[value=approve]").click()
    await expect(a_inbox.locator(".error")).to_contain_text("wrong", timeout=WAIT_MS)
    await expect(a_inbox.locator(f"#approval-{approval_id} .count")).to_have_text("0 of 2")

    # Alice approves with a fresh code; Bob's inbox shows it without a reload (SSE).
    card = a_inbox.locator(f"#approval-{approval_id}")
    await card.locator("input[name=comment]").fill("change 42")
    await card.locator("input[name=totp]").fill(code(alice, 1))
    await card.locator("button[value=approve]").click()
    await expect(a_inbox.locator(".flash")).to_contain_text("1 of 2", timeout=WAIT_MS)
    await expect(b_card.locator(".count")).to_have_text("1 of 2", timeout=WAIT_MS)
    await expect(b_card).to_contain_text("alice: “change 42”")
    await b_inbox.screenshot(path=str(ARTIFACTS / "inbox-after-first-vote.png"), full_page=True)

    # Bob approves: the approval is granted and the waiting agent receives its key.
    await b_card.locator("input[name=comment]").fill("agreed")
    await b_card.locator("input[name=totp]").fill(code(bob, 1))
    await b_card.locator("button[value=approve]").click()
    await expect(b_inbox.locator(".flash")).to_contain_text("now approved (2 of 2)", timeout=WAIT_MS)
    status, out, _ = await poll(agent, request_id, wait=30)
    assert status == 200, out
    assert len(opened(agent, out, ephemeral)) == 32
    await expect(a_inbox.locator(f"#approval-{approval_id}")).to_have_count(0, timeout=WAIT_MS)
    s.stream_page, s.releases_only = stream_page, releases_only


async def _stream_and_request_details(s: Scene) -> None:
    """The live stream, and the detail pages of a denied and an approved request."""
    tenant, agent, auditor, a, request_id = s.tenant, s.agent, s.auditor, s.a, s.request_id
    stream_page, releases_only = s.stream_page, s.releases_only
    # The live stream showed the approvals and the release as they happened.
    released = stream_page.locator('tr[data-type="key.released"]')
    await expect(released).to_contain_text(request_id, timeout=WAIT_MS)
    await expect(released).to_contain_text("released version 1")
    await expect(stream_page.locator('tr[data-type="approval.granted"]')).to_contain_text(tenant.key_id)
    await stream_page.screenshot(path=str(ARTIFACTS / "live-stream.png"), full_page=True)
    # A filtered stream shows only its kind.
    await expect(releases_only.locator('tr[data-type="key.released"]')).to_contain_text(request_id, timeout=WAIT_MS)
    await expect(releases_only.locator("tbody tr")).to_have_count(1)

    # A request the policy does not match is denied; its detail page explains it rule by rule.
    status, denied, _ = await agent.request(tenant.key_id, {"identity": {"region": "us-east-1"},
                                                            "integrity": {"firewall_enabled": True}})
    assert status == 403, denied
    status, decisions, _ = await auditor.call("GET", "/v1/decisions?effect=deny")
    assert status == 200 and decisions["items"], decisions
    denied_id = decisions["items"][0]["request_id"]
    await expect(stream_page.locator('tr[data-type="key.decided"]')).to_contain_text(denied_id, timeout=WAIT_MS)
    detail, response = await a.page(f"/console/requests/{denied_id}")
    assert response.status == 200
    await expect(detail.locator("#effect")).to_have_text("deny")
    trace = detail.locator("#trace")
    await expect(trace).to_contain_text("eu-needs-approval")
    await expect(trace).to_contain_text("identity.region")
    await expect(trace).to_contain_text('"us-east-1"')
    await expect(trace).to_contain_text('"eu-west-1"')
    await expect(trace.locator("td.fail")).to_have_count(1)
    await expect(trace).to_contain_text("claimed")
    await expect(detail.locator("#told")).to_contain_text('"effect": "deny"')
    facts = detail.locator("table.facts-table")
    await expect(facts.locator("tr", has_text="identity.device_id")).to_contain_text("observed")
    await expect(facts.locator("tr", has_text="identity.region")).to_contain_text("claimed")
    await detail.screenshot(path=str(ARTIFACTS / "denied-request.png"), full_page=True)
    # The approved request's page shows both votes with their comments.
    approved, _ = await a.page(f"/console/requests/{request_id}")
    await expect(approved.locator("#approval")).to_contain_text("approved")
    await expect(approved.locator("#approval")).to_contain_text("bob at")


async def _csrf_refused_and_a_third_approver_denies(s: Scene) -> None:
    """A vote without its CSRF token changes nothing; a denial reaches the agent and the pages."""
    api, browser, messages, tenant, agent, alice, carol = s.api, s.browser, s.messages, s.tenant, s.agent, s.alice, s.carol
    a_inbox, b_inbox = s.a_inbox, s.b_inbox
    # A change without the CSRF token is refused, even from the signed-in browser itself.
    status, pending2, _ = await ask(agent, tenant.key_id)
    assert status == 202
    form = {"verdict": "deny", "comment": "forged", "totp": code(alice, 1)}
    refused = await a_inbox.request.post(f"{api.url}/console/approvals/{pending2['approval_id']}/vote", form=form)
    assert refused.status == 403
    forged = await a_inbox.request.post(f"{api.url}/console/approvals/{pending2['approval_id']}/vote", form=form,
                                        headers={"X-CSRF-Token": "0" * 64})
    assert forged.status == 403
    status, still, _ = await alice.call("GET", f"/v1/approvals/{pending2['approval_id']}")
    assert status == 200 and still["status"] == "pending" and still["votes"] == []

    # Carol denies it from her own browser (it reached her inbox live); the agent is refused and
    # the request's page shows the denial and her comment.
    e = await Console.open(browser, api.url, messages)
    carol_inbox = await e.sign_in(tenant.tenant_id, carol, "carol")
    await carol_inbox.goto(api.url + "/console/approvals")
    carol_card = carol_inbox.locator(f"#approval-{pending2['approval_id']}")
    await carol_card.locator("input[name=comment]").fill("not today")
    await carol_card.locator("input[name=totp]").fill(code(carol, 1))
    await carol_card.locator("button[value=deny]").click()
    await expect(carol_inbox.locator(".flash")).to_contain_text("now denied", timeout=WAIT_MS)
    await expect(b_inbox.locator(f"#approval-{pending2['approval_id']}")).to_have_count(0, timeout=WAIT_MS)
    status, out, _ = await poll(agent, pending2["request_id"])
    assert status == 403 and out["request_status"] == "denied", out
    denial, _ = await e.page(f"/console/requests/{pending2['request_id']}")
    await expect(denial.locator("#approval h2")).to_have_text("Approval: denied")
    await expect(denial.locator("#approval")).to_contain_text("not today")
    s.e = e


async def _roles_see_only_what_they_may(s: Scene) -> None:
    """An auditor reads but cannot vote; a key custodian sees nothing of approvals."""
    api, browser, messages, tenant, team, agent, auditor = s.api, s.browser, s.messages, s.tenant, s.team, s.agent, s.auditor
    # Roles: an auditor sees the inbox but cannot vote; a key custodian may not open it at all.
    c = await Console.open(browser, api.url, messages)
    audit_page = await c.sign_in(tenant.tenant_id, auditor, "audrey")
    await expect(audit_page.locator("#tile-devices")).to_contain_text("1 active of 1 enrolled")
    await expect(audit_page.locator("#tile-audit")).to_contain_text("records")
    await expect(audit_page.locator("#tile-decisions")).to_contain_text("1 denied")
    status, pending3, _ = await ask(agent, tenant.key_id)
    assert status == 202
    await audit_page.goto(api.url + "/console/approvals")
    await expect(audit_page.locator(f"#approval-{pending3['approval_id']}")).to_have_count(1, timeout=WAIT_MS)
    await expect(audit_page.locator(".vote-form")).to_have_count(0)
    custodian = await team.user("key_custodian", username="kim")
    d = await Console.open(browser, api.url, messages)
    login, _ = await d.page("/console/login")
    await login.fill("input[name=tenant]", tenant.tenant_id)
    await login.fill("input[name=username]", "kim")
    await login.fill("input[name=password]", "vault-door-orchid-7291")
    await login.fill("input[name=totp]", code(custodian, 1))
    await login.click("button[type=submit].primary")
    await login.wait_for_url("**/console/overview")
    # The custodian's overview has the keys tile only: nothing of approvals, decisions or devices.
    await expect(login.locator(".tiles > .tile")).to_have_count(1)
    await expect(login.locator("#tile-keys")).to_contain_text("1 active")
    assert (await login.goto(api.url + "/console/approvals")).status == 403
    await expect(login.locator("h1")).to_have_text("Not allowed")
    await expect(login.locator("header nav")).not_to_contain_text("Approvals")
    s.c, s.d = c, d


async def _sign_out_csp_and_shutdown(s: Scene) -> None:
    """Signing out, the browser enforcing the CSP, a stream ending on shutdown, and no violation logged."""
    api, http, stack, messages, a_inbox = s.api, s.http, s.stack, s.messages, s.a_inbox
    a, b, c, d, e = s.a, s.b, s.c, s.d, s.e
    # Signing out ends the session for the API too.
    await a_inbox.click("header form.who button")
    await a_inbox.wait_for_url("**/console/login")
    gone, _ = await a.page("/console/approvals")
    assert gone.url.endswith("/console/login")

    # The browser enforces the policy: a script injected inline does not run, and says why in the
    # console (so the check below would see a violation).
    probe_messages: list[str] = []
    probe, _ = await Console(c.context, api.url, probe_messages).page("/console/overview")
    await probe.evaluate("() => { const s = document.createElement('script'); s.textContent = 'window.injected = 1';"
                         " document.head.appendChild(s); }")
    assert await probe.evaluate("() => window.injected") is None
    for _ in range(200):  # the console message arrives on its own; wait for it (an outcome, not a speed)
        if any("Content Security Policy" in m for m in probe_messages):
            break
        await asyncio.sleep(0.05)
    assert any("Content Security Policy" in m for m in probe_messages), probe_messages

    # A live stream ends by itself, saying so, when the gateway shuts down (not cut off at the timeout).
    session = next(c["value"] for c in await b.context.cookies() if c["name"] == "sr_console")
    for ctx in (a, b, c, d, e):
        await ctx.context.close()
    async with http.get(f"{api.url}/console/stream/live", headers={"Cookie": f"sr_console={session}"}) as live:
        assert live.status == 200 and live.headers["Content-Type"].startswith("text/event-stream")
        assert (await live.content.readline()).startswith(b": stream open")
        stopping = asyncio.create_task(stack.stop("gateway"))
        rest = await asyncio.wait_for(live.content.read(), 30)
        await stopping
    assert b"event: end\ndata: gateway shutting down" in rest
    csp = [m for m in messages if "Content Security Policy" in m or "Content-Security-Policy" in m]
    assert csp == [], csp
    assert not [m for m in messages if m.startswith("pageerror")], messages
