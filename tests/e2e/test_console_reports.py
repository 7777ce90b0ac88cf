"""The console's Reports screen in Debian's Chromium over the real stack: releases and denials made
by a real agent, charted with the policy's name beside its id (never "?"), the device's and key's
names, the whole denial reason, per-hour and per-day trends, the CSV download with those names
beside the ids, and no Content-Security-Policy violation.

The screenshot goes to `artifacts/console/reports.png` (or $STRONGROOM_ARTIFACTS/console)."""

from __future__ import annotations

import asyncio
from pathlib import Path

from playwright.async_api import expect

from services.gateway.console.web import CSP

from .helpers import EU_FACTS, BareAgent, audit_records, make_tenant
from .test_console import ARTIFACTS, WAIT_MS, Console, browser  # noqa: F401  (browser is a fixture)

US_FACTS = {**EU_FACTS, "identity": {"region": "us-east-1", "cloud_provider": "aws"}}


async def _released_and_denied(api):
    """A tenant whose agent had one key released and two requests denied, all in its audit log."""
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api, name="web-01")
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    for _ in range(2):
        assert (await agent.request(tenant.key_id, US_FACTS))[0] == 403
    while True:  # the audit log takes the events on its own; wait for all three outcomes
        actions = [r["action"] for r in await audit_records(tenant.admin)]
        if "key.released" in actions and actions.count("key.decided") >= 3:
            return tenant, agent
        await asyncio.sleep(0.05)


async def test_reports_screen_names_policies_devices_keys_and_whole_reasons(api, browser, stack):  # noqa: F811
    tenant, agent = await _released_and_denied(api)
    status, report, _ = await tenant.admin.call("GET", "/v1/reports")
    assert status == 200, report
    reason = max((r["reason"] for r in report["top_denial_reasons"]), key=len)
    assert len(reason) > 40, reason  # longer than the old cut at 40 characters
    auditor = await tenant.team.user("auditor", username="audrey")

    messages: list[str] = []
    console = await Console.open(browser, api.url, messages)
    overview = await console.sign_in(tenant.tenant_id, auditor, "audrey")
    await expect(overview.locator("header nav")).to_contain_text("Reports")
    page, response = await console.page("/console/reports")
    assert response.status == 200 and response.headers["content-security-policy"] == CSP

    await expect(page.locator("#report-totals")).to_contain_text("1 releases · 2 denials", timeout=WAIT_MS)
    by_policy = page.locator("svg[aria-label='Releases by policy']")
    await expect(by_policy).to_contain_text(f"eu-volumes ({tenant.policy_id})")
    assert "?" not in await by_policy.text_content()
    await expect(page.locator("svg[aria-label='Releases by device']")).to_contain_text(f"web-01 ({agent.device_id})")
    await expect(page.locator("svg[aria-label='Denials by key']")).to_contain_text(f"acme-vol ({tenant.key_id})")
    lines = await page.locator("svg[aria-label='Top denial reasons'] tspan").all_text_contents()
    assert reason in " ".join(lines), (reason, lines)
    hourly = page.locator("svg[aria-label='Releases and denials per hour']")
    await expect(hourly).to_contain_text("releases")
    assert await page.locator("svg[aria-label='Releases and denials per day'] rect").count() >= 4  # legend + 2 bars
    # Every chart fits its view box: the count after the longest bar is drawn inside it.
    overflow = await page.evaluate("""() => [...document.querySelectorAll('svg.chart')].flatMap(svg => {
        const width = svg.viewBox.baseVal.width;
        return [...svg.querySelectorAll('text, rect')].filter(el => {
            const box = el.getBBox(); return box.x + box.width > width + 0.5; }).map(el => el.textContent); })""")
    assert overflow == [], overflow
    assert await page.locator("[style]").count() == 0  # nothing the CSP would refuse

    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    await page.screenshot(path=str(ARTIFACTS / "reports.png"), full_page=True)
    # The CSV download: one fact per row, the device's, key's and policy's names beside their ids.
    async with page.expect_download() as downloading:
        await page.click("#report-csv")
    download = await downloading.value
    assert download.suggested_filename == "strongroom-report-7d.csv"
    rows = (await asyncio.to_thread(Path(await download.path()).read_text)).splitlines()
    assert rows[0] == "section,dimension,value,name,count"
    assert f"releases,device,{agent.device_id},web-01,1" in rows
    assert f"releases,policy,{tenant.policy_id},eu-volumes,1" in rows
    assert f"denials,key,{tenant.key_id},acme-vol,2" in rows
    await console.context.close()
    csp = [m for m in messages if "Content Security Policy" in m or "Content-Security-Policy" in m]
    assert csp == [], csp
    assert not [m for m in messages if m.startswith("pageerror")], messages
