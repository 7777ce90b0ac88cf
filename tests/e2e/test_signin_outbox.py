"""Sign-in events go through the gateway's outbox: with the broker unreachable for the gateway's
publisher, a login, a failed login and a logout still work, and their audit records arrive once
the broker is back (each once)."""

from __future__ import annotations

from collections import Counter

import pytest

from shared.bus import BusError

from .helpers import PASSWORD, accept_invitation, address, audit_records_until, make_team


async def test_login_and_logout_are_audited_after_a_broker_outage(api, broker_cut_later):
    team = await make_team(api)
    status, auditor, _ = await team.admin.call("POST", "/v1/users", json={"username": "aud", "roles": ["auditor"],
                                                                          "email": address("aud")})
    assert status == 201, auditor
    await accept_invitation(api, address("aud"))
    login = {"tenant": team.tenant_id, "username": "aud", "password": PASSWORD}
    cut = broker_cut_later()
    status, out, _ = await api.as_(None).call("POST", "/v1/auth/login", json={**login, "password": "wrong-password-1"})
    assert status == 401, out  # a failed sign-in answers as ever, its record kept for later
    status, session, _ = await api.as_(None).call("POST", "/v1/auth/login", json=login)
    assert status == 201, session
    person = api.as_(session["session_token"])
    assert (await person.call("GET", "/v1/me"))[0] == 200
    assert (await person.call("POST", "/v1/auth/logout"))[0] == 204
    assert (await person.call("GET", "/v1/me"))[0] == 401
    cut.restore()

    def landed(records) -> bool:
        actions = Counter(r["action"] for r in records if r["actor"]["id"] in (auditor["user_id"], "unknown")
                          or r.get("details", {}).get("username") == "aud")
        return {"user.login_failed", "user.logged_in", "user.logged_out"} <= set(actions)

    records = await audit_records_until(team.admin, landed, timeout=60)
    assert landed(records), [r["action"] for r in records]
    mine = [r for r in records if r["action"] in ("user.logged_in", "user.logged_out")
            and r["actor"]["id"] == auditor["user_id"]]
    assert sorted(r["action"] for r in mine) == ["user.logged_in", "user.logged_out"]  # each once
    assert {r["details"].get("session_id") for r in mine} == {session["session_id"]}


@pytest.fixture
def broker_cut_later(stack):
    """Makes every publish of the gateway's bus fail as it does with the broker unreachable, from
    when the test asks (after its setup); `restore()` brings it back."""
    cuts = []
    bus = stack.buses["gateway"]

    async def unreachable(exchange, event) -> None:
        raise BusError(f"publish of {event.type} failed: ConnectionError('broker unreachable')")

    class Cut:
        def restore(self) -> None:
            bus.__dict__.pop("_publish_to", None)

    def start() -> Cut:
        bus._publish_to = unreachable
        cuts.append(Cut())
        return cuts[-1]

    yield start
    for cut in cuts:
        cut.restore()
