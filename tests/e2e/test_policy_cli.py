"""`strongroom approval|group|decision|events` and `policy versions|restore|simulate` against the stack."""

from __future__ import annotations

import asyncio
import json
import re

from strongroom.cli import main

from .helpers import ALLOW_EU, EU_FACTS, BareAgent, make_tenant
from .test_approvals import approval_policy, ask, poll

_LOG_LINE = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d \[")


def without_logs(out: str) -> str:
    """The CLI's own output: the services in this process log to the same stdout."""
    return "\n".join(line for line in out.splitlines() if not _LOG_LINE.match(line))


async def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = await asyncio.to_thread(main, list(argv))
    out, err = capsys.readouterr()
    return code, without_logs(out), err


async def test_operator_cli_for_approvals_groups_decisions_versions_simulate_and_events(api, capsys, tmp_path):
    tenant = await make_tenant(api, policy=approval_policy())
    agent = await BareAgent.enroll(tenant, api)

    async def base_for(permission: str) -> list[str]:
        """Each command as a tenant user whose role holds its permission (separation of duties)."""
        person = await tenant.team.for_permission(permission)
        return ["--url", api.url, "--token", person.token]

    status, pending, ephemeral = await ask(agent, tenant.key_id)
    assert status == 202
    code, out, _ = await run(capsys, *(await base_for("approvals.read")), "approval", "list")
    assert code == 0 and pending["approval_id"] in out and "0/1" in out
    code, out, _ = await run(capsys, *(await base_for("approvals.decide")), "approval", "approve", pending["approval_id"], "--comment", "ticket 7")
    assert code == 0 and "approved (1 of 1 approvals)" in out
    assert (await poll(agent, pending["request_id"], wait=30))[0] == 200
    code, out, err = await run(capsys, *(await base_for("approvals.decide")), "approval", "deny", pending["approval_id"])
    assert code == 1 and "409" in err

    group = tmp_path / "group.json"
    group.write_text(json.dumps({"name": "golden", "kind": "device",
                                 "match": {"fact": "identity.image_id", "op": "in", "value": ["ami-1"]}}))
    code, out, _ = await run(capsys, *(await base_for("groups.manage")), "group", "put", str(group))
    assert code == 0 and "name: golden" in out
    group.write_text(json.dumps({"name": "bad", "kind": "device", "match": {"fact": "identity.image_id", "op": "nope"}}))
    code, _, err = await run(capsys, *(await base_for("groups.manage")), "group", "put", str(group))
    assert code == 1 and "(field: match.op)" in err
    code, out, _ = await run(capsys, *(await base_for("groups.read")), "group", "list")
    assert code == 0 and "golden" in out and "bad" not in out

    code, out, _ = await run(capsys, *(await base_for("decisions.read")), "decision", "list")
    assert code == 0 and pending["request_id"] in out
    code, out, _ = await run(capsys, *(await base_for("decisions.read")), "decision", "show", pending["request_id"], "--json")
    assert code == 0 and json.loads(out)["approval"]["status"] == "approved"

    candidate = tmp_path / "allow.json"
    candidate.write_text(json.dumps(ALLOW_EU))
    code, out, _ = await run(capsys, *(await base_for("policies.simulate")), "policy", "simulate", str(candidate), "--days", "1", "--replaces", tenant.policy_id)
    assert code == 0 and "1 request(s) replayed, 1 decided differently" in out
    assert f"would gain access: device {agent.device_id}" in out
    assert "identity.region=claimed" in out  # each fact the candidate tested, with its provenance
    code, out, _ = await run(capsys, *(await base_for("policies.manage")), "policy", "put", str(candidate), "--id", tenant.policy_id)
    assert code == 0
    code, out, _ = await run(capsys, *(await base_for("policies.read")), "policy", "versions", tenant.policy_id)
    assert code == 0 and len(out.splitlines()) == 3  # header and two versions
    code, out, _ = await run(capsys, *(await base_for("policies.manage")), "policy", "restore", tenant.policy_id, "1")
    assert code == 0 and "version 1 restored as version 3" in out

    tail = asyncio.create_task(asyncio.to_thread(main, [*(await base_for("approvals.read")), "events", "tail", "--type", "approval.requested", "--count", "1", "--json"]))
    err = ""
    for _ in range(200):  # until the stream is open
        err += capsys.readouterr().err
        if "watching events" in err:
            break
        await asyncio.sleep(0.05)
    status, again, _ = await agent.request(tenant.key_id, EU_FACTS)
    assert status == 202  # approval required again
    assert await asyncio.wait_for(tail, 15) == 0
    lines = [json.loads(line) for line in without_logs(capsys.readouterr().out).splitlines() if line.startswith("{")]
    assert [(e["type"], e["request_id"]) for e in lines] == [("approval.requested", again["request_id"])]

    # Resuming after that event: what came since (here the approval of that request) comes first.
    status, _, _ = await tenant.admin.call("POST", f"/v1/approvals/{again['approval_id']}/approve", json={})
    assert status == 200
    code, out, _ = await run(capsys, *(await base_for("approvals.read")), "events", "tail", "--type", "approval.*",
                             "--after", lines[0]["event_id"], "--count", "1", "--json")
    assert code == 0
    resumed = [json.loads(line) for line in without_logs(out).splitlines() if line.startswith("{")]
    assert [(e["type"], e["request_id"]) for e in resumed] == [("approval.granted", again["request_id"])]
