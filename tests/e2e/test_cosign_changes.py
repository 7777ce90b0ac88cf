"""Co-signing in small-team mode approves one pending change by its id: the second person signs
in and confirms that change; no credential is ever handed over, and the confirmed change runs once,
exactly as it was asked for."""

from __future__ import annotations

import asyncio
import re

from .helpers import audit_records_until, make_team, put_confirmed_settings


async def _small_team(api):
    team = await make_team(api)
    await put_confirmed_settings(team, {"small_team": True})
    both = await team.user("tenant_admin", "key_custodian", username="both")
    custodian = await team.user("key_custodian", username="cora")
    return team, both, custodian


async def _key_names(person) -> set[str]:
    status, out, _ = await person.call("GET", "/v1/keys")
    assert status == 200, out
    return {k["name"] for k in out["items"]}


async def test_a_co_signers_credential_cannot_be_reused_for_another_change(api):
    """The attack on the credential header: co-signed once, the first person keeps the second
    person's credential and signs any other change with it."""
    team, both, custodian = await _small_team(api)
    handed_over = {"X-Strongroom-Cosign": custodian.token}
    await both.call("POST", "/v1/keys", json={"name": "asked-for"}, headers=handed_over)
    status, out, _ = await both.call("POST", "/v1/keys", json={"name": "never-asked"}, headers=handed_over)
    assert status != 201, out
    assert "never-asked" not in await _key_names(custodian)


async def test_a_change_is_confirmed_by_id_and_runs_once_as_asked(api):
    team, both, custodian = await _small_team(api)
    auditor = await team.user("auditor")
    status, out, _ = await both.call("POST", "/v1/keys", json={"name": "pair"})
    assert status == 428 and out["field"] == "X-Strongroom-Change" and out["change_id"].startswith("chg_"), out
    change_id, digest = out["change_id"], out["body_sha256"]
    # Nobody confirms their own change; the confirmer holds the change's permission.
    status, out, _ = await both.call("POST", f"/v1/changes/{change_id}/confirm")
    assert status == 403 and out["field"] == "change_id", out
    status, out, _ = await auditor.call("POST", f"/v1/changes/{change_id}/confirm")
    assert status == 403 and "keys.manage" in out["detail"], out
    status, out, _ = await auditor.call("GET", "/v1/changes")
    assert status == 200 and out["items"] == [], out
    # Not confirmed yet: the change does not run.
    status, out, _ = await both.call("POST", "/v1/keys", json={"name": "pair"}, headers={"X-Strongroom-Change": change_id})
    assert status == 409 and "not been confirmed" in out["detail"], out
    status, out, _ = await custodian.call("GET", "/v1/changes")
    assert status == 200 and len(out["items"]) == 1, out
    shown = out["items"][0]
    assert (shown["change_id"], shown["method"], shown["path"], shown["body_sha256"], shown["requested_by"]) == (
        change_id, "POST", "/v1/keys", digest, both.user_id)
    status, out, _ = await custodian.call("POST", f"/v1/changes/{change_id}/confirm")
    assert status == 200 and out["status"] == "confirmed" and out["confirmed_by"] == custodian.user_id, out
    # Confirmed for that body: another body, another path or another person gets nothing from it.
    header = {"X-Strongroom-Change": change_id}
    status, out, _ = await both.call("POST", "/v1/keys", json={"name": "swapped"}, headers=header)
    assert status == 409 and "another" in out["detail"], out
    status, out, _ = await custodian.call("POST", "/v1/keys", json={"name": "cora-own"}, headers=header)
    assert status == 201, out  # cora needs no co-signer: the header means nothing to her request
    status, out, _ = await both.call("POST", "/v1/keys", json={"name": "pair"}, headers=header)
    assert status == 201 and out["name"] == "pair", out
    status, out, _ = await both.call("POST", "/v1/keys", json={"name": "pair"}, headers=header)
    assert status == 409 and "already" in out["detail"], out  # once
    assert await _key_names(custodian) == {"cora-own", "pair"}
    records = await audit_records_until(
        team.admin, lambda rs: any(r["action"] == "key.created" and r["actor"]["id"] == both.user_id for r in rs)
        and any(r["action"] == "change.confirmed" for r in rs))
    created = next(r for r in records if r["action"] == "key.created" and r["actor"]["id"] == both.user_id)
    assert created["actor"]["id"] == both.user_id and created["actor"]["auth"].endswith(f"+cosigned:{custodian.user_id}")
    confirmed = next(r for r in records if r["action"] == "change.confirmed")
    assert confirmed["actor"]["id"] == custodian.user_id and confirmed["details"]["requested_by"] == both.user_id


async def test_the_cli_lists_and_confirms_changes_and_repeats_the_request(api, capsys):
    from strongroom.cli import main

    team, both, custodian = await _small_team(api)
    base = ["--url", api.url, "--token"]
    code = await asyncio.to_thread(main, [*base, both.token, "key", "create", "cli-pair"])
    err = capsys.readouterr().err
    assert code == 1 and "strongroom changes confirm chg_" in err and "--change chg_" in err, err
    change_id = re.search(r"chg_[0-9a-f]{32}", err).group(0)
    code = await asyncio.to_thread(main, [*base, custodian.token, "changes", "list"])
    out = capsys.readouterr().out
    assert code == 0 and change_id in out and "/v1/keys" in out, out
    code = await asyncio.to_thread(main, [*base, custodian.token, "changes", "confirm", change_id])
    assert code == 0, capsys.readouterr()
    capsys.readouterr()
    code = await asyncio.to_thread(main, [*base, both.token, "--change", change_id, "key", "create", "cli-pair"])
    assert code == 0, capsys.readouterr()
    assert "cli-pair" in await _key_names(custodian)


async def test_the_cli_waits_for_the_confirmation_and_then_carries_the_change_out(api, capsys):
    from strongroom.cli import main

    team, both, custodian = await _small_team(api)
    argv = ["--url", api.url, "--token", both.token, "--wait", "60", "key", "create", "waited-for"]
    run = asyncio.create_task(asyncio.to_thread(main, argv))
    for _ in range(300):
        status, out, _ = await custodian.call("GET", "/v1/changes")
        if out["items"]:
            break
        await asyncio.sleep(0.1)
    assert [c["path"] for c in out["items"]] == ["/v1/keys"], out
    assert "waited-for" not in await _key_names(custodian)  # nothing runs before the confirmation
    status, out, _ = await custodian.call("POST", f"/v1/changes/{out['items'][0]['change_id']}/confirm")
    assert status == 200, out
    assert await asyncio.wait_for(run, 60) == 0, capsys.readouterr()
    assert "waiting up to 60 s" in capsys.readouterr().err
    assert "waited-for" in await _key_names(custodian)
