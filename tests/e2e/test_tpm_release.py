"""A TPM through the whole stack (Debian's swtpm): the agent registers its EK and AK over the API
(MakeCredential/ActivateCredential), then every key request carries a quote bound to the gateway's
challenge and the request's one-time key. A policy on ``integrity.pcr.16`` with ``attested``
provenance releases the key only while the measured value holds, and a reboot shows as
``integrity.boot``; the same values written into the facts file are only claimed.
"""

from __future__ import annotations

import base64

import pytest

from agent.client import AgentClient, AgentError, KeyDenied
from agent.evidence import TpmEvidence, register_tpm
from agent.tpm import Tpm
from tests.swtpm import running_swtpm

from .helpers import audit_records_until, make_tenant

PCRS = (0, 7, 16)


@pytest.fixture
def swtpm(tmp_path):
    with running_swtpm(tmp_path / "tpm") as software:
        yield software


def _policy(pcr16: str) -> dict:
    return {"name": "measured-boot", "disclose": "reasons", "rules": [{"id": "golden", "effect": "allow", "when": {
        "all": [{"fact": "integrity.pcr.16", "op": "equals", "value": pcr16, "provenance": "attested"}]}}]}


async def test_a_quote_per_request_releases_the_key_only_while_the_measurement_holds(api, swtpm, tmp_path):
    tpm = Tpm(swtpm.tcti)
    tpm.extend_pcr(16, b"the approved image")
    golden = tpm.read_pcrs([16])[16].hex()
    tenant = await make_tenant(api, policy=_policy(golden))
    status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-1"})
    assert status == 201, enr
    async with AgentClient() as client:
        identity = await client.enroll(api.url, enr["token"], "vm-1", tmp_path / "agent")
        claimed = {"integrity": {"pcr": {"16": golden}}}
        with pytest.raises(KeyDenied) as denied:  # the TPM is not registered: the value is only claimed
            await client.request_key(tenant.key_id, facts=claimed)
        assert any("only claimed" in r for r in denied.value.reasons), denied.value.reasons
        registered = await register_tpm(client, tpm)
    assert registered["device_id"] == identity.device_id and registered["ak_subject"].startswith("tpm:")

    async with AgentClient(identity, evidence=TpmEvidence(tpm, PCRS)) as client:
        released = await client.request_key(tenant.key_id, facts={})
        assert len(released.key) == 32
        tpm.extend_pcr(16, b"something else ran")  # the measurement no longer matches
        with pytest.raises(KeyDenied) as denied:
            await client.request_key(tenant.key_id, facts=claimed)  # a claim cannot override the quote
        assert any("integrity.pcr.16" in r for r in denied.value.reasons), denied.value.reasons
        swtpm.restart()  # a reboot: PCR 16 back to zero, resetCount one more
        with pytest.raises(KeyDenied):
            await client.request_key(tenant.key_id, facts={})
        heartbeat = await client.heartbeat({})
        assert heartbeat["device_id"] == identity.device_id

    records = await audit_records_until(
        tenant.admin, lambda rs: sum(r["action"] == "key.decided" for r in rs) == 4)
    assert any(r["action"] == "device.tpm_registered" for r in records)
    requested = [r for r in records if r["action"] == "key.requested"]
    assert requested[1]["details"]["provenance"]["integrity.pcr.16"] == "attested"
    assert requested[1]["details"]["evidence"]["subject"] == registered["ak_subject"]
    status, decision, _ = await tenant.admin.call("GET", f"/v1/decisions/{requested[3]['details']['request_id']}")
    assert status == 200, decision
    assert decision["facts"]["integrity"]["boot"] == "rebooted", decision["facts"]
    assert decision["facts"]["integrity"]["pcr"]["16"] == "00" * 32
    assert decision["provenance"]["integrity.reset_count"] == "attested"


async def test_an_activation_answers_once_and_only_with_the_sealed_secret(api, swtpm, tmp_path):
    tenant = await make_tenant(api)
    status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-1"})
    async with AgentClient() as client:
        await client.enroll(api.url, enr["token"], "vm-1", tmp_path / "agent")
        keys = Tpm(swtpm.tcti).ensure_keys()
        pending = await client.post_signed("/v1/agent/tpm/enrol", keys.to_json(), expect=201)
        wrong = {"activation_id": pending["activation_id"], "secret": "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="}
        with pytest.raises(AgentError) as refused:
            await client.post_signed("/v1/agent/tpm/activate", wrong)
        assert refused.value.status == 403
        secret = Tpm(swtpm.tcti).activate(pending["credential"])
        with pytest.raises(AgentError) as gone:  # one answer per activation, right or wrong
            await client.post_signed("/v1/agent/tpm/activate", {
                "activation_id": pending["activation_id"], "secret": base64.b64encode(secret).decode()})
        assert gone.value.status == 404
