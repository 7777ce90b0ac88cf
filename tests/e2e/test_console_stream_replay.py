"""The console's live stream over HTTP as a reconnecting browser sees it: every row carries its
event's id, raw `key.requested` events appear beside the release, and a stream
reopened with Last-Event-ID gets the events after that id from the gateway's replay buffer (an id
it no longer keeps: a gap row, then every kept event); each event only for roles that may read it;
and in Chromium, htmx's SSE client reconnecting with the last id it saw gets exactly what it missed.

The screenshot goes to `artifacts/console/stream-reconnected.png` (or $STRONGROOM_ARTIFACTS/console)."""

from __future__ import annotations

import asyncio
import contextlib
import re

import aiohttp
from playwright.async_api import expect

from .helpers import EU_FACTS, BareAgent, make_tenant
from .test_console import ARTIFACTS, WAIT_MS, Console, browser  # noqa: F401  (the Chromium fixture)

DEADLINE = 60.0  # how long to wait for the events to reach the stream (an outcome, not a speed claim)


async def _frames(api, token: str, *, last_event_id: str | None, until, query: str = "") -> list[dict]:
    """The stream's messages (id and data) until `until(messages so far)` holds."""
    headers = {"Cookie": f"sr_console={token}"}
    if last_event_id is not None:
        headers["Last-Event-ID"] = last_event_id
    frames: list[dict] = []
    timeout = aiohttp.ClientTimeout(total=DEADLINE)
    async with (aiohttp.ClientSession(timeout=timeout) as client,
                client.get(api.url + "/console/stream/live" + query, headers=headers) as resp):
        assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/event-stream")
        current: dict = {"id": None, "data": ""}
        async for raw in resp.content:
            line = raw.decode().rstrip("\n")
            if line.startswith("id: "):
                current["id"] = line[4:]
            elif line.startswith("data: "):
                current["data"] += line[6:]
            elif line == "" and (current["id"] or current["data"]):
                frames.append(current)
                if until(frames):
                    return frames
                current = {"id": None, "data": ""}
    raise AssertionError(f"stream ended before {until!r}: {frames}")


# An allowed request is streamed as its raw request and its release (key.decided.allow goes to
# keysvc alone); a denial or an approval would add its decision.
ALL = {"key.requested", "key.released"}


def _all_kept(frames: list[dict]) -> bool:
    return set(_types(frames)) == ALL


def _types(frames: list[dict]) -> list[str]:
    return [t for f in frames for t in ("key.requested", "key.decided", "key.released") if f'data-type="{t}"' in f["data"]]


@contextlib.asynccontextmanager
async def _watching(api, token: str):
    """An API event stream that may show raw requests, open for the block."""
    async with (aiohttp.ClientSession() as client,
                client.get(api.url + "/v1/events/stream?types=key.requested",
                           headers={"Authorization": f"Bearer {token}"}) as stream):
        assert (await stream.content.readline()).startswith(b": stream open")
        yield


async def test_console_stream_replays_after_last_event_id_with_raw_requests(api, browser):  # noqa: F811
    tenant = await make_tenant(api)
    # Enrolled with the previous step's code, so the console's sign-in can use the current one.
    officer = await tenant.team.user("security_officer", username="sol", enrol_step=-1)
    admin = tenant.team.admin  # events.read without decisions.read
    # Raw requests reach a gateway only while a stream there may show them (`stream_binding`): one
    # is open from before the release to the end, as an operator's console would be.
    async with _watching(api, officer.token):
        agent = await BareAgent.enroll(tenant, api)
        status, out, _ = await agent.request(tenant.key_id, EU_FACTS)
        assert status == 200, out

        # A browser back after a restart of its stream (an id this gateway never issued): a gap row,
        # then every kept event, the raw request among them, each with its own id.
        frames = await asyncio.wait_for(_frames(api, officer.token, last_event_id="evt_gone", until=_all_kept), DEADLINE)
        assert "may be missing" in frames[0]["data"] and frames[0]["id"] is None
        rows = [f for f in frames if "data-type" in f["data"]]
        assert sorted(_types(rows)) == sorted(ALL), frames
        assert all(len(f["id"]) == 32 for f in rows) and len({f["id"] for f in rows}) == len(ALL)  # the events' own ids
        requested = next(f for f in rows if 'data-type="key.requested"' in f["data"])
        assert out["request_id"] in requested["data"] and "requested the latest version" in requested["data"]
        first, after = rows[0], rows[1:]
        assert "sealed_key" not in "".join(f["data"] for f in frames)

        # Reconnecting after the first: exactly what followed it, in order, no gap row, nothing repeated.
        again = await asyncio.wait_for(_frames(api, officer.token, last_event_id=first["id"],
                                               until=lambda fs: len(fs) == len(after)), DEADLINE)
        assert [f["id"] for f in again] == [f["id"] for f in after] and not any("may be missing" in f["data"] for f in again)

        # Filtered by text that no row matches: the events the filter leaves out still move the
        # browser's id on (id-only messages), so the next reconnect does not replay them.
        hidden = await asyncio.wait_for(_frames(api, officer.token, last_event_id=first["id"],
                                                until=lambda fs: len(fs) == len(after), query="?q=no-such-thing"), DEADLINE)
        assert [(f["id"], f["data"]) for f in hidden] == [(f["id"], "") for f in after], hidden

        # A tenant admin may watch events but not decisions: from the same id, the replay holds only
        # the device's revocation (devices.read), none of the request's events.
        status, revoked, _ = await officer.call("POST", f"/v1/devices/{agent.device_id}/revoke", json={"reason": "gone"})
        assert status == 200, revoked
        seen = await asyncio.wait_for(_frames(api, admin.token, last_event_id=first["id"],
                                              until=lambda fs: "device.revoked" in fs[-1]["data"]), DEADLINE)
        assert _types(seen) == [] and not any(f["id"] in {r["id"] for r in rows} for f in seen), seen
        await _browser_reconnects_with_its_last_event_id(api, browser, tenant, officer, first, after + seen[-1:])

async def _browser_reconnects_with_its_last_event_id(api, browser, tenant, officer, first, missed) -> None:  # noqa: F811
    """In Chromium, htmx's SSE client sends the last id it saw when its stream drops: the first
    connection is made to end after `first` (a routed, cut-short answer), and the reconnection gets
    exactly the rows after it from the gateway, none twice."""
    messages: list[str] = []
    console = await Console.open(browser, api.url, messages)
    await console.sign_in(tenant.tenant_id, officer, "sol")
    sent_ids: list[str | None] = []

    async def cut_short_once(route) -> None:
        sent_ids.append(route.request.headers.get("last-event-id"))
        if len(sent_ids) > 1:
            await route.continue_()
            return
        body = f': open\n\nid: {first["id"]}\ndata: {first["data"]}\n\n'  # then the stream ends
        await route.fulfill(status=200, headers={"Content-Type": "text/event-stream"}, body=body)

    await console.context.route("**/console/stream/live*", cut_short_once)
    page, _ = await console.page("/console/stream")
    rows = page.locator("#tail tr[data-type]")
    await expect(rows).to_have_count(1 + len(missed), timeout=WAIT_MS)
    assert sent_ids == [None, first["id"]], sent_ids
    shown = [await r.get_attribute("data-type") for r in await rows.all()]
    expected = [_type_of(f) for f in reversed([first, *missed])]  # newest at the top
    assert shown == expected, (shown, expected)
    await page.screenshot(path=str(ARTIFACTS / "stream-reconnected.png"), full_page=True)
    await console.context.close()
    csp = [m for m in messages if "Content Security Policy" in m or "Content-Security-Policy" in m]
    assert csp == [] and not [m for m in messages if m.startswith("pageerror")], messages


def _type_of(frame: dict) -> str:
    return re.search(r'data-type="([^"]+)"', frame["data"]).group(1)

