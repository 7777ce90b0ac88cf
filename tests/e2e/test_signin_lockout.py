"""Sign-in through the gateway as an attacker tries it: no password oracle (a good password
without its TOTP answers exactly like a wrong one, and counts), and a lockout that one address
cannot turn against the user signing in from another. Two source addresses are two loopback
addresses (the gateway counts by the socket peer)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import aiohttp
import pyotp
import pytest

from .conftest import Api
from .helpers import PASSWORD, make_team

WRONG = "wrong-password-123"


@pytest.fixture
async def elsewhere(stack):
    """An anonymous client whose requests come from 127.0.0.2 (the `api` fixture's from 127.0.0.1)."""
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))) as session:
        yield Api(session, stack.url)


async def _login(client: Api, tenant_id: str, username: str, password: str, **extra):
    async with client.session.post(client.url + "/v1/auth/login",
                                   json={"tenant": tenant_id, "username": username, "password": password, **extra}) as resp:
        return resp.status, await resp.json(content_type=None), resp.headers


async def test_a_good_password_without_its_totp_answers_like_a_wrong_one(api):
    team = await make_team(api)
    officer = await team.user("security_officer", username="olga")
    anon = api.as_(None)
    answers = [await _login(anon, team.tenant_id, "olga", password, **extra)
               for password, extra in ((WRONG, {}), (PASSWORD, {}), (PASSWORD, {"totp": "000000"}),
                                       (PASSWORD, {"recovery_code": "not-a-code"}))]
    answers.append(await _login(anon, team.tenant_id, "nobody-here", WRONG))
    assert [(status, body) for status, body, _ in answers] == [(401, answers[0][1])] * 5
    assert answers[0][1]["detail"] == "missing or invalid credentials" and "field" not in answers[0][1]
    assert officer.totp_secret  # the user is enrolled: a TOTP was due in every attempt above


async def test_a_good_password_without_its_totp_counts_toward_the_lockout(api):
    team = await make_team(api)
    officer = await team.user("security_officer", username="olga")
    anon = api.as_(None)
    for _ in range(5):  # the gateway's default lockout threshold
        status, body, _ = await _login(anon, team.tenant_id, "olga", PASSWORD)
        assert status == 401, body
    code = pyotp.TOTP(officer.totp_secret).at(datetime.now(UTC) + timedelta(seconds=30))
    status, body, headers = await _login(anon, team.tenant_id, "olga", PASSWORD, totp=code)
    assert status == 429 and int(headers["Retry-After"]) > 0, body


async def test_failures_from_one_address_do_not_lock_out_another(api, elsewhere):
    team = await make_team(api)
    await team.user("auditor", username="ann")
    for _ in range(5):
        status, body, _ = await _login(elsewhere, team.tenant_id, "ann", WRONG)
        assert status == 401, body
    # The guessing address is locked, even with the right password...
    status, body, headers = await _login(elsewhere, team.tenant_id, "ann", PASSWORD)
    assert status == 429 and int(headers["Retry-After"]) > 0, body
    # ...while ann, signing in from her own address, is not.
    status, body, _ = await _login(api.as_(None), team.tenant_id, "ann", PASSWORD)
    assert status == 201, body


@pytest.mark.stack(gateway={"lockout_threshold": 2, "lockout_global_threshold": 4})
async def test_guessing_from_many_addresses_is_bounded_per_username(api, elsewhere, stack):
    team = await make_team(api)
    await team.user("auditor", username="ann")
    for client in (elsewhere, api.as_(None)):
        for _ in range(2):
            status, body, _ = await _login(client, team.tenant_id, "ann", WRONG)
            assert status == 401, body
    # Four failures in the window from all addresses together: the name is locked everywhere.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(local_addr=("127.0.0.3", 0))) as session:
        status, body, headers = await _login(Api(session, stack.url), team.tenant_id, "ann", PASSWORD)
    assert status == 429 and int(headers["Retry-After"]) > 0, body
