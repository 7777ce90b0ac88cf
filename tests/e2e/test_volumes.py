"""Volumes on the server, end to end: an agent registers a LUKS2 volume (bound to the instance its
enrolment evidence proved), key requests naming it are recorded as attachments, a policy keeps the
volume on its instance (a copy attached to a stranger's VM is refused and raises
`volume.attached_elsewhere` in the audit log and the event stream), operators list and show volumes
through the API and the CLI, and the recovery passphrase is escrowed to keysvc and released only
after two other people approve (break-glass, `strongroom volume recovery`). Tenants see only their own.
"""

from __future__ import annotations

import asyncio
import json
import os
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import volumes_api
from agent.client import AgentClient, AgentError
from agent.identity import AgentIdentity

from .helpers import EU_FACTS, BareAgent, audit_records_until, make_tenant, raw, signed_evidence
from .test_notifications import read_events
from .test_policy_cli import run

ISSUER = Ed25519PrivateKey.generate()  # the deployer's identity signer, trusted through the gateway's settings
pytestmark = pytest.mark.stack(gateway={"evidence_signers": raw(ISSUER.public_key())})

STAY_HOME = {
    "name": "volumes-stay-home",
    "disclose": "reasons",
    "rules": [
        {"id": "eu", "effect": "allow", "when": {"fact": "identity.region", "op": "equals", "value": "eu-west-1"}},
        {"id": "not-elsewhere", "effect": "deny", "when": {
            "fact": "volume.attached_to_bound_instance", "op": "equals", "value": False, "provenance": "observed"}},
    ],
}
UUID = "3f1c2a9e-5b7d-4c1e-9a2b-0d4e6f8a1b2c"


async def enrolled_on(tenant, api, name: str, instance: str, image: str) -> BareAgent:
    """An agent enrolled with `signed` evidence proving the instance and image it runs on."""
    proved = {"identity": {"cloud": "test", "region": "eu-west-1", "instance_id": instance, "image_id": image}}
    return await BareAgent.enroll(tenant, api, name=name,
                                  evidence=lambda key: signed_evidence(ISSUER, key, proved, subject=f"test:{instance}"))


def client_of(agent: BareAgent, api, http) -> AgentClient:
    identity = AgentIdentity(gateway_url=api.url, tenant_id=agent.tenant_id, device_id=agent.device_id,
                             key_id=agent.key_id, private_key=agent.signing_key)
    return AgentClient(identity, session=http)


async def unlock(agent: BareAgent, key_id: str, volume: dict, facts: dict = EU_FACTS):
    """A signed key request naming the volume it unlocks (the agent's `volume` field)."""
    body, _ = agent.request_body(key_id, facts)
    body = json.dumps({**json.loads(body), "volume": volume}).encode()
    status, out, _ = await agent.api.call("POST", "/v1/agent/key-requests", data=body, headers=agent.signed(body))
    return status, out


async def test_volume_registry_attachments_alert_and_listing(api, http, capsys):
    tenant = await make_tenant(api, policy=STAY_HOME)
    home = await enrolled_on(tenant, api, "vm-home", "i-home", "ami-golden")
    stranger = await enrolled_on(tenant, api, "vm-stranger", "i-stranger", "ami-golden")

    record = await volumes_api.register_volume(client_of(home, api, http), key_id=tenant.key_id, key_version=1,
                                               luks_uuid=UUID, device="/dev/vdb")
    volume_id = record["volume_id"]
    assert volume_id.startswith("vol_") and record["luks_uuid"] == UUID and record["device_path"] == "/dev/vdb"
    assert record["bound"] == {"device_id": home.device_id, "instance": "test:i-home", "image": "ami-golden",
                               "provenance": "cloud"}
    # Another device cannot re-bind it, nor register another volume with its LUKS UUID.
    with pytest.raises(AgentError) as refused:
        await volumes_api.register_volume(client_of(stranger, api, http), key_id=tenant.key_id, key_version=1,
                                          luks_uuid=UUID, device="/dev/vdc", volume_id=volume_id)
    assert refused.value.status == 409 and refused.value.field == "volume_id"
    with pytest.raises(AgentError) as refused:
        await volumes_api.register_volume(client_of(stranger, api, http), key_id=tenant.key_id, key_version=1,
                                          luks_uuid=UUID, device="/dev/vdc")
    assert refused.value.status == 409 and refused.value.field == "luks_uuid"

    watcher = await tenant.team.for_role("auditor")
    async with http.get(f"{api.url}/v1/events/stream?types=volume.*",
                        headers={"Authorization": f"Bearer {watcher.token}"}) as stream:
        assert (await stream.content.readline()).startswith(b": stream open")
        status, out = await unlock(home, tenant.key_id, {"volume_id": volume_id, "luks_uuid": UUID})
        assert status == 200, out
        # The stranger (a copy of the disk on its VM) even claims the volume facts itself: they are replaced.
        lying = {**EU_FACTS, "volume": {"attached_to_bound_instance": True, "bound_instance": "test:i-stranger"}}
        status, denied = await unlock(stranger, tenant.key_id, {"volume_id": volume_id}, facts=lying)
        assert status == 403 and any("volume.attached_to_bound_instance" in r for r in denied["reasons"]), denied
        seen = await read_events(stream, 3, timeout=30)
    kinds = [kind for kind, _ in seen]
    assert sorted(kinds) == ["volume.attached", "volume.attached", "volume.attached_elsewhere"], kinds
    alert = next(data for kind, data in seen if kind == "volume.attached_elsewhere")
    assert alert["volume_id"] == volume_id and alert["outcome"] == "denied"
    assert alert["attached"]["instance"] == "test:i-stranger" and alert["bound"]["instance"] == "test:i-home"

    records = await audit_records_until(tenant.admin, lambda rs: any(r["action"] == "volume.attached_elsewhere"
                                                                     for r in rs), timeout=30)
    audited = next(r for r in records if r["action"] == "volume.attached_elsewhere")
    assert audited["resource"] == {"type": "volume", "id": volume_id} and audited["outcome"] == "denied"
    assert any(r["action"] == "volume.registered" for r in records)
    requested = [r for r in records if r["action"] == "key.requested"]
    assert requested[-1]["details"]["provenance"]["volume"] == "observed"
    assert requested[-1]["details"]["facts"]["volume"]["attached_to_bound_instance"] is False

    reader = await tenant.team.for_permission("volumes.read")
    status, shown, _ = await reader.call("GET", f"/v1/volumes/{volume_id}")
    assert status == 200, shown
    assert shown["last_unlock"]["device_id"] == home.device_id and shown["last_unlock"]["instance"] == "test:i-home"
    assert [(a["device_id"], a["attached_to_bound_instance"], a["outcome"]) for a in shown["attachments"]] == [
        (stranger.device_id, False, "denied"), (home.device_id, True, "success")]
    status, listed, _ = await reader.call("GET", "/v1/volumes")
    assert status == 200 and [v["volume_id"] for v in listed["items"]] == [volume_id]

    base = ["--url", api.url, "--token", reader.token]
    code, out, _ = await run(capsys, *base, "volume", "list")
    assert code == 0 and volume_id in out and "test:i-home" in out
    code, out, _ = await run(capsys, *base, "volume", "show", volume_id)
    assert code == 0 and "attachments:" in out and "denied" in out and stranger.device_id in out
    code, _, err = await run(capsys, *base, "volume", "show", "vol_nope")
    assert code == 1 and "404" in err

    # Another tenant sees none of it, and its agents' requests naming the volume find nothing registered.
    other = await make_tenant(api, name="globex", policy=STAY_HOME)
    outsider = await enrolled_on(other, api, "vm-outsider", "i-outsider", "ami-golden")
    other_reader = await other.team.for_permission("volumes.read")
    assert (await other_reader.call("GET", f"/v1/volumes/{volume_id}"))[0] == 404
    status, listed, _ = await other_reader.call("GET", "/v1/volumes")
    assert status == 200 and listed["items"] == []
    status, out = await unlock(outsider, other.key_id, {"volume_id": volume_id})
    assert status == 200, out  # its own key; the volume is no volume of its tenant, so no attachment there
    status, shown, _ = await reader.call("GET", f"/v1/volumes/{volume_id}")
    assert len(shown["attachments"]) == 2


async def test_recovery_escrow_and_break_glass_release_needs_two_other_people(api, http, capsys, tmp_path):
    tenant = await make_tenant(api, policy=STAY_HOME)
    home = await enrolled_on(tenant, api, "vm-home", "i-home", "ami-golden")
    agent = client_of(home, api, http)
    record = await volumes_api.register_volume(agent, key_id=tenant.key_id, key_version=1, luks_uuid=UUID,
                                               device="/dev/vdb")
    volume_id = record["volume_id"]
    custodian = await tenant.team.for_role("key_custodian")
    base = ["--url", api.url, "--token", custodian.token]

    # Nothing escrowed yet: nothing to ask for.
    code, _, err = await run(capsys, *base, "volume", "recovery", volume_id, "--reason", "disk lost", "--timeout", "1")
    assert code == 1 and "409" in err and "no recovery passphrase" in err

    passphrase = secrets.token_urlsafe(32).encode()
    await volumes_api.escrow_recovery(agent, volume_id=volume_id, passphrase=passphrase)
    # Another device cannot escrow over it.
    with pytest.raises(AgentError) as refused:
        await volumes_api.escrow_recovery(client_of(await enrolled_on(tenant, api, "vm-2", "i-2", "ami-golden"),
                                                    api, http), volume_id=volume_id, passphrase=b"mine now")
    assert refused.value.status == 404

    alice = await tenant.team.user("approver")
    bob = await tenant.team.user("approver")
    out_file = tmp_path / "recovered.key"
    task = asyncio.create_task(run(capsys, *base, "volume", "recovery", volume_id, "--reason", "INC-42 host lost",
                                   "--out", str(out_file), "--interval", "1", "--timeout", "120"))
    approval = None
    for _ in range(600):
        status, listed, _ = await alice.call("GET", "/v1/approvals?status=pending")
        assert status == 200, listed
        approval = next((a for a in listed["items"] if a.get("volume_id") == volume_id), None)
        if approval is not None:
            break
        await asyncio.sleep(0.1)
    assert approval is not None and approval["kind"] == "volume_recovery" and approval["approvals_required"] == 2
    assert "INC-42 host lost" in approval["reasons"][0]
    approval_id = approval["approval_id"]
    # The requester cannot approve their own request (nor do they hold approvals.decide at all).
    assert (await custodian.call("POST", f"/v1/approvals/{approval_id}/approve"))[0] == 403
    status, one, _ = await alice.call("POST", f"/v1/approvals/{approval_id}/approve", json={"comment": "ok"})
    assert status == 200 and one["status"] == "pending" and one["approvals_received"] == 1
    # One approval releases nothing: collecting now is refused.
    status, early, _ = await custodian.call(
        "POST", f"/v1/volumes/{volume_id}/recovery-requests/{approval['request_id']}/collect")
    assert status == 409 and "pending" in early["detail"]
    status, two, _ = await bob.call("POST", f"/v1/approvals/{approval_id}/approve", json={"comment": "agreed"})
    assert status == 200 and two["status"] == "approved"

    code, out, err = await task
    assert code == 0, err
    assert out_file.read_bytes() == passphrase and (os.stat(out_file).st_mode & 0o777) == 0o600
    assert passphrase.decode() not in out and passphrase.decode() not in err
    # Collected once: a second collection is refused.
    status, again, _ = await custodian.call(
        "POST", f"/v1/volumes/{volume_id}/recovery-requests/{approval['request_id']}/collect")
    assert status == 409, again

    # Another tenant cannot ask for it, see it, or collect it.
    other = await make_tenant(api, name="globex", policy=STAY_HOME)
    outsider = await other.team.for_role("key_custodian")
    status, _, _ = await outsider.call("POST", f"/v1/volumes/{volume_id}/recovery-requests",
                                       json={"reason": "mine", "public_key": raw(Ed25519PrivateKey.generate().public_key())})
    assert status == 404
    status, _, _ = await outsider.call(
        "POST", f"/v1/volumes/{volume_id}/recovery-requests/{approval['request_id']}/collect")
    assert status == 404

    records = await audit_records_until(tenant.admin, lambda rs: any(r["action"] == "volume.recovery_released"
                                                                     for r in rs), timeout=30)
    actions = [r["action"] for r in records]
    for action in ("volume.registered", "volume.recovery_escrowed", "approval.requested", "approval.voted",
                   "approval.granted", "volume.recovery_released"):
        assert action in actions, actions
    released = next(r for r in records if r["action"] == "volume.recovery_released")
    assert sorted(released["details"]["approvers"]) == sorted([alice.user_id, bob.user_id])
    # The passphrase appears nowhere in the audit log, sealed or not.
    assert passphrase.decode() not in json.dumps(records)
