"""Provenance through the whole stack: the ``echo`` attack, and what verified evidence changes.

The attack (Strongroom issue 15): a root user on the VM writes ``{"identity": {"region":
"eu-west-1"}}`` into the agent's facts file and the key is released. A policy that requires
``cloud`` provenance for the region and the image refuses those claims; the same facts proved by
``signed`` evidence (an issuer key the test holds, trusted through the gateway's settings, the
signature checked for real) release it.
"""

from __future__ import annotations

import base64
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .helpers import BareAgent, audit_records_until, make_tenant, raw, signed_evidence

ISSUER = Ed25519PrivateKey.generate()  # a deployer's signing service: the VM never holds this key
pytestmark = pytest.mark.stack(gateway={"evidence_signers": raw(ISSUER.public_key())})

CLOUD_EU = {
    "name": "eu-images-proved-by-the-cloud",
    "disclose": "reasons",
    "rules": [{"id": "eu-image", "effect": "allow", "when": {"all": [
        {"fact": "identity.region", "op": "equals", "value": "eu-west-1", "provenance": "cloud"},
        {"fact": "identity.image_id", "op": "equals", "value": "ami-0a1b2c", "provenance": "cloud"},
    ]}}],
}
ECHOED = {"identity": {"region": "eu-west-1", "image_id": "ami-0a1b2c"}}  # what `echo > facts.json` writes
PROVED = {"identity": {"cloud": "test", "region": "eu-west-1", "image_id": "ami-0a1b2c", "instance_id": "i-1"}}


async def test_echo_attack_is_refused_and_cloud_evidence_releases_the_key(api):
    tenant = await make_tenant(api, policy=CLOUD_EU)
    agent = await BareAgent.enroll(tenant, api)

    status, denied, key = await agent.request(tenant.key_id, ECHOED)
    assert status == 403 and key is None, denied
    assert any("identity.region is only claimed" in r and "requires cloud provenance" in r
               for r in denied["reasons"]), denied

    # Evidence for the region alone: the image id is still only claimed.
    region_only = signed_evidence(ISSUER, agent, {"identity": {"region": "eu-west-1"}})
    status, denied, _ = await agent.request(tenant.key_id, ECHOED, evidence=region_only)
    assert status == 403 and any("identity.image_id is only claimed" in r for r in denied["reasons"]), denied

    status, out, key = await agent.request(tenant.key_id, ECHOED, evidence=signed_evidence(ISSUER, agent, PROVED))
    assert status == 200 and len(key) == 32, out

    # The audit keeps each request's provenance and each decision's conditions with theirs.
    records = await audit_records_until(
        tenant.admin, lambda rs: sum(r["action"] == "key.decided" for r in rs) == 3)
    requested = [r for r in records if r["action"] == "key.requested"]
    assert "identity.region" not in requested[0]["details"]["provenance"]  # claimed: absent from the map
    assert requested[2]["details"]["provenance"]["identity.region"] == "cloud"
    assert requested[2]["details"]["provenance"]["observed"] == "observed"
    assert requested[2]["details"]["evidence"] == {
        "kind": "signed", "verified": True, "provenance": "cloud", "subject": f"test:{agent.device_id}", "reason": ""}
    refused = next(r for r in records if r["action"] == "key.decided" and r["outcome"] == "denied")  # the first
    assert [(c["fact"], c["provenance"], c["required"], c["result"]) for c in refused["trace"][0]["conditions"]] == [
        ("identity.region", "claimed", "cloud", False)]  # all() stopped at the first untrusted fact

    # The decision API shows the provenance of every fact of the allowed request.
    status, decision, _ = await tenant.admin.call("GET", f"/v1/decisions/{out['request_id']}")
    assert status == 200, decision
    conditions = decision["trace"][0]["conditions"]
    assert {(c["fact"], c["provenance"]) for c in conditions} == {("identity.region", "cloud"),
                                                                  ("identity.image_id", "cloud")}
    assert decision["provenance"]["identity.cloud_provider"] == "cloud"  # the alias `cloud`, as policies name it
    assert decision["facts"]["identity"]["cloud_provider"] == "test"

    # A dry-run over recorded traffic weighs each request's facts as they were proved then.
    status, diff, _ = await tenant.admin.call("POST", "/v1/policies/simulate", json={
        "policy": CLOUD_EU, "policy_id": tenant.policy_id, "recorded_days": 1})
    assert status == 200, diff
    replayed = {item["request_id"]: item for item in diff["items"]}
    assert replayed[out["request_id"]]["candidate"] == "allow"
    assert replayed[out["request_id"]]["provenance"] == {"identity.region": "cloud", "identity.image_id": "cloud"}
    echoed = next(item for item in diff["items"] if item["provenance"] == {"identity.region": "claimed"})
    assert echoed["candidate"] == "deny"


async def test_forged_or_borrowed_evidence_proves_nothing_and_says_why(api):
    tenant = await make_tenant(api, policy=CLOUD_EU)
    agent = await BareAgent.enroll(tenant, api)
    other = await BareAgent.enroll(tenant, api, name="vm-2")

    forged = signed_evidence(Ed25519PrivateKey.generate(), agent, PROVED)  # the VM's own key is no issuer
    status, denied, _ = await agent.request(tenant.key_id, ECHOED, evidence=forged)
    assert status == 403, denied
    assert "signed evidence was refused (not signed by a trusted issuer): the request's facts are claimed only" \
        in denied["reasons"], denied

    borrowed = signed_evidence(ISSUER, other, PROVED)  # genuine, but bound to another VM's key
    status, denied, _ = await agent.request(tenant.key_id, ECHOED, evidence=borrowed)
    assert status == 403 and any("bound to another device" in r for r in denied["reasons"]), denied

    tampered = signed_evidence(ISSUER, agent, PROVED)
    document = json.loads(base64.b64decode(tampered["document"]))
    document["facts"]["identity"]["region"] = "eu-central-1"
    tampered["document"] = base64.b64encode(json.dumps(document).encode()).decode()
    status, denied, _ = await agent.request(tenant.key_id, ECHOED, evidence=tampered)
    assert status == 403 and any("not signed by a trusted issuer" in r for r in denied["reasons"]), denied

    expired = signed_evidence(ISSUER, agent, PROVED, expires_at="2020-01-01T00:00:00+00:00")
    status, denied, _ = await agent.request(tenant.key_id, ECHOED, evidence=expired)
    assert status == 403 and any("evidence has expired" in r for r in denied["reasons"]), denied

    unknown = {"kind": "<script>tpm-from-mars</script>", "quote": "x"}
    status, denied, _ = await agent.request(tenant.key_id, ECHOED, evidence=unknown)
    assert status == 403 and any("unknown evidence was refused (unknown evidence kind)" in r
                                 for r in denied["reasons"]), denied
    assert "mars" not in json.dumps(denied)  # an unknown kind is never echoed


async def test_a_claim_that_contradicts_evidence_loses_and_is_recorded(api):
    tenant = await make_tenant(api, policy=CLOUD_EU)
    agent = await BareAgent.enroll(tenant, api)
    lying = {"identity": {"region": "us-east-1", "image_id": "ami-0a1b2c"}}
    status, out, _ = await agent.request(tenant.key_id, lying, evidence=signed_evidence(ISSUER, agent, PROVED))
    assert status == 200, out  # the verified region is the one decided on
    status, decision, _ = await tenant.admin.call("GET", f"/v1/decisions/{out['request_id']}")
    assert status == 200 and decision["facts"]["identity"]["region"] == "eu-west-1"
    records = await audit_records_until(tenant.admin, lambda rs: any(r["action"] == "key.decided" for r in rs))
    decided = next(r for r in records if r["action"] == "key.decided")
    assert ("identity.region: the claimed value contradicted verified evidence; the verified value was used"
            in decided["reasons"]), decided
    requested = next(r for r in records if r["action"] == "key.requested")
    assert requested["details"]["contradicted"] == ["identity.region"]


async def test_a_policy_wide_minimum_and_the_dry_run_show_provenance(api):
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    strict = {
        "name": "cloud-minimum", "minimum_provenance": "cloud", "targets": {"devices": "all", "keys": "all"},
        "rules": [{"id": "eu", "effect": "allow", "when": {"all": [
            {"fact": "identity.region", "op": "equals", "value": "eu-west-1"},
            # The gateway saw the address itself: this condition asks for no more than observed.
            {"fact": "observed.source_ip", "op": "exists", "provenance": "observed"}]}}],
    }
    firewalled = {**ECHOED, "integrity": {"firewall_enabled": True}}  # what the current policy allows
    requests = [
        {"device_id": agent.device_id, "key_id": tenant.key_id, "facts": firewalled},
        {"device_id": agent.device_id, "key_id": tenant.key_id, "facts": {**firewalled, "observed": {"source_ip": "::1"}},
         "provenance": {"identity.region": "cloud", "observed": "observed"}},
    ]
    status, diff, _ = await tenant.admin.call("POST", "/v1/policies/simulate", json={
        "policy": strict, "policy_id": tenant.policy_id, "requests": requests})
    assert status == 200, diff
    claimed, proved = diff["items"]
    assert (claimed["current"], claimed["candidate"]) == ("allow", "deny") and claimed["provenance"] == {"identity.region": "claimed"}
    assert any("identity.region is only claimed: the condition requires cloud provenance" in r
               for r in claimed["candidate_reasons"]), claimed
    assert proved["candidate"] == "allow"
    assert proved["provenance"] == {"identity.region": "cloud", "observed.source_ip": "observed"}

    status, problem, _ = await tenant.admin.call("POST", "/v1/policies/simulate", json={
        "policy": strict, "requests": [{**requests[0], "provenance": {"identity.region": "notarised"}}]})
    assert status == 422 and problem["field"] == "requests[0].provenance", problem
    status, problem, _ = await tenant.admin.call("POST", "/v1/policies", json={**strict, "minimum_provenance": "sworn"})
    assert status in (400, 422) and "minimum_provenance" in json.dumps(problem), problem


async def test_heartbeats_are_checked_with_their_provenance_too(api):
    from .test_posture import beat

    tenant = await make_tenant(api, policy=CLOUD_EU)
    agent = await BareAgent.enroll(tenant, api)
    status, out, _ = await agent.request(tenant.key_id, ECHOED, evidence=signed_evidence(ISSUER, agent, PROVED))
    assert status == 200, out
    status, out, _ = await beat(agent, ECHOED, signed_evidence(ISSUER, agent, PROVED))
    assert status == 200 and out["status"] == "active", out
    status, out, _ = await beat(agent, ECHOED)  # the same facts, claimed only: they no longer earn the key
    assert status == 200 and out["status"] == "quarantined", out
    status, out, _ = await beat(agent, ECHOED, signed_evidence(ISSUER, agent, PROVED))
    assert status == 200 and out["status"] == "active", out


async def test_an_instance_belongs_to_the_first_device_that_proves_it(api):
    tenant = await make_tenant(api, policy=CLOUD_EU)

    def instance(key):  # the issuer vouches for instance i-1, whichever agent key asks
        return signed_evidence(ISSUER, key, PROVED, subject="test:i-1")

    first = await BareAgent.enroll(tenant, api, evidence=instance)
    second = await BareAgent.enroll(tenant, api, name="vm-clone", evidence=instance)
    records = await audit_records_until(tenant.admin, lambda rs: sum(r["action"] == "device.enrolled" for r in rs) == 2)
    enrolled = {r["actor"]["id"]: r["details"] for r in records if r["action"] == "device.enrolled"}
    assert enrolled[first.device_id]["subject"] == "test:i-1"
    assert enrolled[second.device_id]["subject"] is None
    assert enrolled[second.device_id]["evidence"]["reason"] == "the instance is enrolled as another device"

    status, out, _ = await first.request(tenant.key_id, ECHOED, evidence=instance(first.signing_key))
    assert status == 200, out
    status, denied, _ = await second.request(tenant.key_id, ECHOED, evidence=instance(second.signing_key))
    assert status == 403 and any("the instance is enrolled as another device" in r for r in denied["reasons"]), denied

    status, _, _ = await tenant.admin.call("POST", f"/v1/devices/{first.device_id}/revoke", json={"reason": "rebuilt"})
    assert status == 200
    status, out, _ = await second.request(tenant.key_id, ECHOED, evidence=instance(second.signing_key))
    assert status == 200, out  # a revoked device holds no instance
