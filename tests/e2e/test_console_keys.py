"""The console's keys and devices screens in Debian's Chromium over the real stack: a key custodian
lists and filters keys, rotates one and retires its old version, schedules its destruction (seeing
the dependency report), is refused approving their own, a second custodian approves from another
browser and the first cancels; a security officer reads a device's last heartbeat facts with their
provenance, sees it quarantined when its facts drift, and revokes it, after which the agent is refused. Each effect is checked through the
API; the overview's keys and devices tiles count them by state; lifecycle actions (suspend, resume)
as the key's state allows, and clearing a device's quarantine; roles without a screen get 403, a
change without the permission or the CSRF token too; no CSP violation.

Screenshots go to `artifacts/console/` (or $STRONGROOM_ARTIFACTS/console), ignored by git."""

from __future__ import annotations

from types import SimpleNamespace

from playwright.async_api import expect

from .helpers import EU_FACTS, BareAgent, make_tenant
from .test_console import ARTIFACTS, WAIT_MS, Console, browser  # noqa: F401  (the Chromium fixture)
from .test_posture import DRIFTED, beat


async def test_console_keys_and_devices(api, browser):  # noqa: F811
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    tenant = await make_tenant(api)
    team = tenant.team
    # Enrolled with the previous step's code, so the console's sign-in can use the current one.
    kate = await team.user("key_custodian", username="kate", enrol_step=-1)
    kurt = await team.user("key_custodian", username="kurt", enrol_step=-1)
    sam = await team.user("security_officer", username="sam", enrol_step=-1)
    agent = await BareAgent.enroll(tenant, api)
    assert (await agent.request(tenant.key_id, EU_FACTS))[0] == 200
    status, beaten, _ = await beat(agent, EU_FACTS)
    assert status == 200 and beaten["status"] == "active", beaten
    s = SimpleNamespace(api=api, tenant=tenant, kate=kate, kurt=kurt, sam=sam, agent=agent, messages=[])
    s.k = await Console.open(browser, api.url, s.messages)
    s.k_page = await s.k.sign_in(tenant.tenant_id, kate, "kate")
    await _keys_listed_rotated_and_retired(s)
    await _destruction_needs_a_second_custodian(s, browser)
    await _devices_read_and_revoked(s, browser)
    csp = [m for m in s.messages if "Content Security Policy" in m or "Content-Security-Policy" in m]
    assert csp == [], csp
    assert not [m for m in s.messages if m.startswith("pageerror")], s.messages


async def _key(s, key_id: str) -> dict:
    status, key, _ = await s.kate.call("GET", f"/v1/keys/{key_id}")
    assert status == 200, key
    return key


async def _keys_listed_rotated_and_retired(s) -> None:
    api, tenant, page = s.api, s.tenant, s.k_page
    await expect(page.locator("header nav")).to_contain_text("Keys")
    await expect(page.locator("header nav")).not_to_contain_text("Devices")
    status, other, _ = await s.kate.call("POST", "/v1/keys", json={"name": "backups", "activate": False})
    assert status == 201, other
    # The overview counts the keys by state; a custodian has no devices tile.
    await page.goto(api.url + "/console/overview")
    await expect(page.locator("#tile-keys .state-active .n")).to_have_text("1")
    await expect(page.locator("#tile-keys .state-pre_activation .n")).to_have_text("1")
    await expect(page.locator("#tile-devices")).to_have_count(0)
    await page.goto(api.url + "/console/keys")
    row = page.locator(f"#key-{tenant.key_id}")
    await expect(row.locator(".state")).to_have_text("active")
    await expect(row.locator(".latest")).to_have_text("v1")
    await expect(page.locator(f"#key-{other['key_id']} .state")).to_have_text("pre_activation")
    await page.screenshot(path=str(ARTIFACTS / "keys.png"), full_page=True)
    # Filters: by state, and by part of the name.
    await page.select_option("#state-filter", "pre_activation")
    await page.click(".filters button")
    await expect(page.locator("#keys tbody tr")).to_have_count(1)
    await expect(page.locator(f"#key-{other['key_id']}")).to_have_count(1)
    await page.goto(api.url + "/console/keys?name=ACME")
    await expect(page.locator("#keys tbody tr")).to_have_count(1)
    await expect(page.locator(f"#key-{tenant.key_id}")).to_have_count(1)

    # Rotate now: the API shows version 2; retire versions below 2: version 1 no longer decrypts.
    await page.click(f"#key-{tenant.key_id} a")
    await page.fill("#rotate input[name=reason]", "quarterly")
    await page.click("#rotate button")
    await page.wait_for_url("**done=rotated")
    await expect(page.locator(".flash")).to_contain_text("Rotated")
    assert (await _key(s, tenant.key_id))["latest_version"] == 2
    await expect(page.locator("#version-2 .state")).to_have_text("latest")
    await page.fill("#retire input[name=min_decryption_version]", "2")
    await page.fill("#retire input[name=reason]", "old version out")
    await page.click("#retire button")
    await page.wait_for_url("**done=retired")
    assert (await _key(s, tenant.key_id))["min_decryption_version"] == 2
    await expect(page.locator("#version-1 .state")).to_have_text("retired")
    # A bad value is refused naming the field, and nothing changes.
    await page.fill("#retire input[name=min_decryption_version]", "0")
    await page.fill("#retire input[name=reason]", "oops")
    await page.click("#retire button")
    await expect(page.locator(".error")).to_contain_text("min_decryption_version", timeout=WAIT_MS)
    assert (await _key(s, tenant.key_id))["min_decryption_version"] == 2
    await page.screenshot(path=str(ARTIFACTS / "key-rotated.png"), full_page=True)
    await _suspended_and_resumed(s)


async def _suspended_and_resumed(s) -> None:
    """Lifecycle actions as the key's state allows: suspend stops releases, resume restores them;
    an action the state does not allow is refused by keysvc, and nothing changes."""
    api, tenant, page = s.api, s.tenant, s.k_page
    options = await page.locator("#lifecycle select[name=action] option").evaluate_all("os => os.map(o => o.value)")
    assert options == ["suspend", "deactivate", "mark_compromised"], options
    await page.select_option("#lifecycle select[name=action]", "suspend")
    await page.fill("#lifecycle input[name=reason]", "maintenance window")
    await page.click("#lifecycle button")
    await page.wait_for_url("**done=state")
    await expect(page.locator("#key-state")).to_have_text("suspended")
    assert (await _key(s, tenant.key_id))["state"] == "suspended"
    status, refused, _ = await s.agent.request(tenant.key_id, EU_FACTS)
    assert status == 409 and "suspended" in refused["detail"], (status, refused)
    # "activate" is not offered for a suspended key; forged, keysvc refuses it and the page says why.
    csrf = await page.locator("#lifecycle input[name=csrf_token]").input_value()
    forged = await page.request.post(f"{api.url}/console/keys/{tenant.key_id}/state",
                                     form={"csrf_token": csrf, "action": "activate", "reason": "sneaky"})
    assert forged.status == 409 and "activate" in await forged.text(), forged.status
    assert (await _key(s, tenant.key_id))["state"] == "suspended"
    # Without the CSRF token: refused before anything runs.
    no_csrf = await page.request.post(f"{api.url}/console/keys/{tenant.key_id}/state",
                                      form={"action": "resume", "reason": "no token"})
    assert no_csrf.status == 403 and (await _key(s, tenant.key_id))["state"] == "suspended"
    await page.select_option("#lifecycle select[name=action]", "resume")
    await page.fill("#lifecycle input[name=reason]", "window over")
    await page.click("#lifecycle button")
    await page.wait_for_url("**done=state")
    await expect(page.locator("#key-state")).to_have_text("active")
    assert (await s.agent.request(tenant.key_id, EU_FACTS))[0] == 200


async def _destruction_needs_a_second_custodian(s, browser) -> None:  # noqa: F811
    api, tenant, page = s.api, s.tenant, s.k_page
    path = f"/v1/keys/{tenant.key_id}/destruction"
    status, out, _ = await s.kate.call("POST", f"/v1/keys/{tenant.key_id}/state",
                                       json={"action": "deactivate", "reason": "retire"})
    assert status == 200, out
    await page.goto(api.url + f"/console/keys/{tenant.key_id}")
    # The dependency report names the device that received the key.
    await expect(page.locator("#dependencies")).to_contain_text(s.agent.device_id)
    # Without force the dependent device blocks it, as in the API.
    await page.fill("#schedule-destruction input[name=reason]", "retire for good")
    await page.fill("#schedule-destruction input[name=wait_seconds]", "86400")
    await page.click("#schedule-destruction button")
    await expect(page.locator(".error")).to_be_visible(timeout=WAIT_MS)
    assert (await s.kate.call("GET", path))[0] == 404
    await page.fill("#schedule-destruction input[name=reason]", "retire for good")
    await page.fill("#schedule-destruction input[name=wait_seconds]", "86400")
    await page.check("#schedule-destruction input[name=force]")
    await page.click("#schedule-destruction button")
    await page.wait_for_url("**done=scheduled")
    await expect(page.locator("#destruction-status")).to_have_text("scheduled")
    status, scheduled, _ = await s.kate.call("GET", path)
    assert status == 200 and scheduled["status"] == "scheduled" and scheduled["forced"], scheduled
    # The scheduler may not approve their own destruction: dual control, kept from the API.
    await page.click("#approve-destruction button")
    await expect(page.locator(".error")).to_contain_text("dual control", timeout=WAIT_MS)
    assert (await s.kate.call("GET", path))[1]["approvals"] == []
    await expect(page.locator("#destruction")).to_contain_text("by kate")
    await page.screenshot(path=str(ARTIFACTS / "key-destruction.png"), full_page=True)
    # A second custodian approves from their own browser.
    second = await Console.open(browser, api.url, s.messages)
    kurt_page = await second.sign_in(tenant.tenant_id, s.kurt, "kurt")
    await kurt_page.goto(api.url + f"/console/keys/{tenant.key_id}")
    await kurt_page.fill("#approve-destruction input[name=reason]", "agreed")
    await kurt_page.click("#approve-destruction button")
    await kurt_page.wait_for_url("**done=approved")
    status, approved, _ = await s.kate.call("GET", path)
    assert status == 200 and approved["approvals"] == [s.kurt.user_id], approved
    await expect(kurt_page.locator("#destruction-approvals")).to_have_text("kurt")
    # And the first cancels it within the waiting period.
    await page.goto(api.url + f"/console/keys/{tenant.key_id}")
    await page.fill("#cancel-destruction input[name=reason]", "changed my mind")
    await page.click("#cancel-destruction button")
    await page.wait_for_url("**done=cancelled")
    assert (await s.kate.call("GET", path))[1]["status"] == "cancelled"
    assert (await _key(s, tenant.key_id))["state"] == "deactivated"
    # A custodian may not open the devices screens.
    assert (await page.goto(api.url + "/console/devices")).status == 403
    await expect(page.locator("h1")).to_have_text("Not allowed")
    await second.context.close()


async def _devices_read_and_revoked(s, browser) -> None:  # noqa: F811
    api, tenant, agent = s.api, s.tenant, s.agent
    so = await Console.open(browser, api.url, s.messages)
    page = await so.sign_in(tenant.tenant_id, s.sam, "sam")
    await expect(page.locator("header nav")).to_contain_text("Devices")
    await page.goto(api.url + "/console/devices")
    row = page.locator(f"#device-{agent.device_id}")
    await expect(row).to_contain_text("vm-1")
    await expect(row.locator(".status")).to_have_text("active")
    await expect(row.locator(".drift")).to_have_text("in line")
    await page.screenshot(path=str(ARTIFACTS / "devices.png"), full_page=True)
    await page.click(f"#device-{agent.device_id} a")
    facts = page.locator("#facts")
    await expect(facts.locator("tr", has_text="identity.region")).to_contain_text("eu-west-1")
    await expect(facts.locator("tr", has_text="identity.region")).to_contain_text("claimed")
    await expect(facts.locator("tr", has_text="identity.device_id")).to_contain_text("observed")
    await expect(page.locator("#device-status")).to_have_text("active")
    await page.screenshot(path=str(ARTIFACTS / "device.png"), full_page=True)
    # Facts that drift quarantine the device: the list and its page say so, and why.
    status, drifted, _ = await beat(agent, DRIFTED)
    assert status == 200 and drifted["status"] == "quarantined", drifted
    await page.goto(api.url + "/console/devices")
    await expect(row.locator(".status")).to_have_text("quarantined")
    await expect(row.locator(".drift")).to_have_text("quarantined: facts")
    await page.click(f"#device-{agent.device_id} a")
    await expect(page.locator("#quarantine")).to_contain_text("facts")
    await expect(facts.locator("tr", has_text="integrity.firewall_enabled")).to_contain_text("false")
    # The overview counts it among the devices quarantined for drifted facts.
    overview, _ = await so.page("/console/overview")
    await expect(overview.locator("#tile-devices .quarantined-facts .n")).to_have_text("1")
    await expect(overview.locator("#tile-devices .quarantined-heartbeat .n")).to_have_text("0")
    await expect(overview.locator("#tile-devices")).to_contain_text("0 active of 1 enrolled")
    await overview.screenshot(path=str(ARTIFACTS / "overview-security-officer.png"), full_page=True)
    # Clearing the quarantine with a reason: the API shows the device active again.
    await page.fill("#clear-quarantine input[name=reason]", "firewall back on")
    await page.click("#clear-quarantine button")
    await page.wait_for_url("**done=cleared")
    await expect(page.locator("#device-status")).to_have_text("active")
    await expect(page.locator("#clear-quarantine")).to_have_count(0)
    status, posture, _ = await s.sam.call("GET", f"/v1/devices/{agent.device_id}/posture")
    assert status == 200 and posture["status"] == "active", posture
    await overview.reload()
    await expect(overview.locator("#tile-devices .quarantined-facts .n")).to_have_text("0")

    # A security officer reads keys but may not change them: no form, and a forged POST is refused.
    key_page, _ = await so.page(f"/console/keys/{tenant.key_id}")
    await expect(key_page.locator("#rotate")).to_have_count(0)
    csrf = await key_page.locator("header form.who input[name=csrf_token]").input_value()
    refused = await key_page.request.post(f"{api.url}/console/keys/{tenant.key_id}/rotate",
                                          form={"csrf_token": csrf, "reason": "not mine"})
    assert refused.status == 403
    assert (await _key(s, tenant.key_id))["latest_version"] == 2

    # Revoke with a reason: the API shows it revoked and the agent is refused.
    await page.fill("#revoke input[name=reason]", "decommissioned")
    await page.click("#revoke button")
    await page.wait_for_url("**done=revoked")
    await expect(page.locator("#device-status")).to_have_text("revoked")
    status, device, _ = await s.sam.call("GET", f"/v1/devices/{agent.device_id}")
    assert status == 200 and device["status"] == "revoked", device
    status, refused_agent, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 401, refused_agent
    await page.screenshot(path=str(ARTIFACTS / "device-revoked.png"), full_page=True)
    await so.context.close()
    await s.k.context.close()
