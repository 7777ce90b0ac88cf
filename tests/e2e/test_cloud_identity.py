"""Cloud identity evidence through the whole stack, with the tenant's own trust anchors.

The echo attack of issue 15 (a root user writes the region and image id into the facts file) is
refused by a policy that wants them with ``cloud`` provenance; the same agent run with
``--cloud aws`` against a local IMDS (its document signed by a test CA whose region certificate
the tenant pinned, a change confirmed by a second admin) gets the key. GCP evidence answers a
single-use challenge and is bound to the device key, so it is ``attested``; a token lifted from
another VM, or a challenge used twice or by another device, proves nothing. An AWS document
enrols its instance once: a second enrolment with it is refused and audited.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent import cli
from agent.client import AgentClient, KeyDenied
from shared.crypto.cloud_binding import gcp_audience
from tests import cloud_fixtures as fx
from tests.cloud_metadata import AwsImds, GcpMetadata

from .helpers import BareAgent, audit_records_until, make_tenant, raw

IMAGE = "ami-0abcdef1234567890"  # what tests/cloud_fixtures.py documents
CLOUD_EU = {
    "name": "eu-images-proved-by-the-cloud",
    "disclose": "reasons",
    "rules": [{"id": "eu-image", "effect": "allow", "when": {"all": [
        {"fact": "identity.region", "op": "equals", "value": "eu-west-1", "provenance": "cloud"},
        {"fact": "identity.image_id", "op": "equals", "value": IMAGE, "provenance": "cloud"},
    ]}}],
}
ECHOED = {"identity": {"region": "eu-west-1", "image_id": IMAGE}}
GCP_PROJECT = {
    "name": "our-project-attested",
    "disclose": "reasons",
    "rules": [{"id": "project", "effect": "allow", "when": {"all": [
        {"fact": "identity.account", "op": "equals", "value": "strongroom-test", "provenance": "attested"},
    ]}}],
}


async def _pin(tenant, anchors: dict) -> None:
    """The tenant admin pins trust anchors; the change waits for the second admin."""
    status, out, _ = await tenant.team.admin.call("PUT", "/v1/tenant/settings", json={"cloud_identity": anchors})
    assert status == 202 and out["pending_change"]["shown"]["cloud_identity"], out
    status, out, _ = await tenant.team.second_admin.call(
        "POST", f"/v1/tenant/settings/changes/{out['pending_change']['change_id']}/confirm")
    assert status == 200 and out["cloud_identity"], out


def _gcp_token(audience: str, instance_id: str = "4567890123456789") -> str:
    """A token from the VM `instance_id` (each VM of the project has its own)."""
    now = datetime.now(UTC)
    google = fx.gcp_claims(audience, now=now)["google"]
    return fx.gcp_token(audience, now=now, google={"compute_engine": {**google["compute_engine"],
                                                                      "instance_id": instance_id}})


def _aws_evidence() -> dict:
    document = fx.aws_document()
    return {"kind": "aws", "document": document.decode(), "rsa2048": fx.aws_sign(document)}


async def test_echo_attack_is_refused_and_the_aws_identity_document_releases_the_key(api, tmp_path):
    tenant = await make_tenant(api, policy=CLOUD_EU)
    await _pin(tenant, {"aws_region_certs": fx.aws_region_certs("eu-west-1")})
    imds = AwsImds()
    await imds.start()
    try:
        status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-1"})
        assert status == 201, enr
        home = tmp_path / "agent"
        async with AgentClient(cloud="aws", metadata_url=imds.url) as client:
            await client.enroll(api.url, enr["token"], "vm-1", home)
        echoed = tmp_path / "facts.json"
        echoed.write_text(json.dumps(ECHOED))  # `echo ... > facts.json` by root on the VM

        def args(*argv: str):
            return cli.build_parser().parse_args(["--home", str(home), *argv])

        # Without the cloud's word the facts are claimed: denied (exit 3), whatever they say.
        assert await cli.run(args("request-key", "--facts-file", str(echoed), tenant.key_id), environ={}) == 3
        # The same agent fetching its identity document from the (local) metadata service: released.
        assert await cli.run(args("--cloud", "aws", "--metadata-url", imds.url, "request-key", "--facts-file",
                                  str(echoed), tenant.key_id), environ={}) == 0
        # And from the environment, as a unit file would set it.
        env = {"STRONGROOM_AGENT_CLOUD": "aws", "STRONGROOM_AGENT_METADATA_URL": imds.url}
        assert await cli.run(args("request-key", "--facts-file", str(echoed), tenant.key_id), environ=env) == 0
    finally:
        await imds.stop()
    records = await audit_records_until(
        tenant.admin, lambda rs: sum(r["action"] == "key.decided" for r in rs) == 3)
    requested = [r for r in records if r["action"] == "key.requested"]
    assert "identity.region" not in requested[0]["details"]["provenance"]
    assert requested[1]["details"]["provenance"]["identity.image_id"] == "cloud"
    assert requested[1]["details"]["evidence"]["subject"] == f"aws:{fx.ACCOUNT}/{fx.INSTANCE}"
    enrolled = next(r for r in records if r["action"] == "device.enrolled")
    assert enrolled["details"]["evidence"]["verified"] is True, enrolled


async def test_without_pinned_anchors_aws_evidence_proves_nothing(api):
    tenant = await make_tenant(api, policy=CLOUD_EU)
    agent = await BareAgent.enroll(tenant, api)
    status, denied, _ = await agent.request(tenant.key_id, ECHOED, evidence=_aws_evidence())
    assert status == 403 and any("unknown evidence was refused" in r for r in denied["reasons"]), denied


async def test_a_second_enrolment_with_one_aws_document_is_refused_and_audited(api):
    tenant = await make_tenant(api, policy=CLOUD_EU)
    await _pin(tenant, {"aws_region_certs": fx.aws_region_certs("eu-west-1")})
    first = await BareAgent.enroll(tenant, api, evidence=lambda key: _aws_evidence())
    status, out, _ = await first.request(tenant.key_id, ECHOED, evidence=_aws_evidence())
    assert status == 200, out

    # The document lifted from the VM (it names no key and no nonce) enrols nothing else.
    status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "thief"})
    thief_key = Ed25519PrivateKey.generate()
    status, refused, _ = await api.as_(None).call("POST", "/v1/agent/enroll", json={
        "enrollment_token": enr["token"], "name": "thief", "public_key": raw(thief_key.public_key()),
        "evidence": _aws_evidence()})
    assert status == 403 and refused["field"] == "evidence", refused
    assert fx.ACCOUNT not in json.dumps(refused)

    # An older document (pendingTime backwards) for the holder: refused and alerted too.
    older = fx.aws_document(pending="2026-11-01T08:00:00Z")
    status, refused, _ = await first.request(tenant.key_id, ECHOED, evidence={
        "kind": "aws", "document": older.decode(), "rsa2048": fx.aws_sign(older)})
    assert status == 403 and refused["field"] == "evidence", refused

    records = await audit_records_until(
        tenant.admin, lambda rs: sum(r["action"] == "access.denied" for r in rs) >= 2)
    alerts = [r for r in records if r["action"] == "access.denied"]
    reasons = {r["details"]["reason"] for r in alerts}
    assert reasons >= {"instance identity replayed: instance already enrolled",
                       "instance identity replayed: instance launch time moved backwards"}, alerts
    assert sum(r["action"] == "device.enrolled" for r in records) == 1


async def test_gcp_evidence_answers_a_challenge_for_the_device_key(api, tmp_path):
    tenant = await make_tenant(api, policy=GCP_PROJECT)
    await _pin(tenant, {"gcp_jwks": fx.gcp_jwks()})
    metadata = GcpMetadata(_gcp_token)
    await metadata.start()
    try:
        status, enr, _ = await tenant.admin.call("POST", "/v1/enrollment-tokens", json={"name": "vm-1"})
        async with AgentClient(cloud="gcp", metadata_url=metadata.url) as client:
            await client.enroll(api.url, enr["token"], "vm-1", tmp_path / "agent")
            released = await client.request_key(tenant.key_id, facts={})
            assert len(released.key) == 32
            with_claims_only = AgentClient(client.identity)
            async with with_claims_only:
                try:
                    await with_claims_only.request_key(tenant.key_id, facts={"identity": {"account": "strongroom-test"}})
                    raise AssertionError("a claimed project released the key")
                except KeyDenied as exc:
                    assert any("only claimed" in r for r in exc.reasons), exc.reasons
    finally:
        await metadata.stop()
    assert len(metadata.audiences) == 2 and len(set(metadata.audiences)) == 2  # a fresh challenge each time

    agent = await BareAgent.enroll(tenant, api, name="vm-2")
    other = Ed25519PrivateKey.generate()
    challenge = await agent.challenge()
    lifted = {"kind": "gcp", "token": _gcp_token(gcp_audience(challenge, other.public_key().public_bytes_raw()), "2")}
    status, denied, _ = await agent.request(tenant.key_id, {}, evidence=lifted, challenge=challenge)
    assert status == 403 and any("gcp evidence was refused" in r for r in denied["reasons"]), denied

    own = agent.signing_key.public_key().public_bytes_raw()
    challenge = await agent.challenge()
    token = {"kind": "gcp", "token": _gcp_token(gcp_audience(challenge, own), "2")}
    status, out, _ = await agent.request(tenant.key_id, {}, evidence=token, challenge=challenge)
    assert status == 200, out
    status, denied, _ = await agent.request(tenant.key_id, {}, evidence=token, challenge=challenge)  # replayed
    assert status == 403 and any("challenge is unknown, used or expired" in r for r in denied["reasons"]), denied

    third = await BareAgent.enroll(tenant, api, name="vm-3")
    theirs = await third.challenge()  # a challenge issued to another device is not this one's
    token = {"kind": "gcp", "token": _gcp_token(gcp_audience(theirs, own), "2")}
    status, denied, _ = await agent.request(tenant.key_id, {}, evidence=token, challenge=theirs)
    assert status == 403 and any("challenge is unknown" in r for r in denied["reasons"]), denied


async def test_trust_anchors_are_checked_and_changed_only_by_tenant_admins(api):
    tenant = await make_tenant(api)
    status, out, _ = await tenant.team.admin.call("PUT", "/v1/tenant/settings", json={
        "cloud_identity": {"aws_region_certs": {"eu-west-1": "not a certificate"}}})
    assert status == 422 and "not a certificate" not in json.dumps(out), out
    auditor = await tenant.team.user("auditor")
    status, out, _ = await auditor.call("PUT", "/v1/tenant/settings", json={
        "cloud_identity": {"aws_region_certs": fx.aws_region_certs("eu-west-1")}})
    assert status == 403, out
    status, out, _ = await tenant.team.admin.call("PUT", "/v1/tenant/settings", json={
        "cloud_identity": {"aws_region_certs": fx.aws_region_certs("eu-west-1")}})
    assert status == 202 and out["pending_change"]["shown"]["cloud_identity"]["aws_regions"] == ["eu-west-1"], out
    status, out, _ = await tenant.team.admin.call("GET", "/v1/tenant/settings")
    assert status == 200 and "cloud_identity" not in out, out  # not before the second admin confirms


async def test_zero_touch_enrolment_admits_vms_of_named_accounts_and_images_once(api, tmp_path):
    tenant = await make_tenant(api, policy=CLOUD_EU)
    await _pin(tenant, {"aws_region_certs": fx.aws_region_certs("eu-west-1")})
    key = Ed25519PrivateKey.generate()

    def body(evidence: dict, name: str = "vm-zt", signer: Ed25519PrivateKey = key) -> dict:
        return {"tenant_id": tenant.tenant_id, "name": name, "public_key": raw(signer.public_key()),
                "evidence": evidence}

    # Not allowed yet: the tenant named no accounts. The answer is that of a bad credential.
    status, out, _ = await api.as_(None).call("POST", "/v1/agent/enroll/zero-touch", json=body(_aws_evidence()))
    assert status == 401, out
    rule = {"accounts": [fx.ACCOUNT], "image_ids": ["ami-another"], "groups": ["zero-touch"]}
    status, out, _ = await tenant.team.admin.call("PUT", "/v1/tenant/settings", json={"zero_touch": rule})
    assert status == 202, out  # who may enrol without a token waits for a second admin
    status, out, _ = await tenant.team.second_admin.call(
        "POST", f"/v1/tenant/settings/changes/{out['pending_change']['change_id']}/confirm")
    assert status == 200 and out["zero_touch"]["accounts"] == [fx.ACCOUNT], out

    # The account is allowed, the image is not.
    status, out, _ = await api.as_(None).call("POST", "/v1/agent/enroll/zero-touch", json=body(_aws_evidence()))
    assert status == 401, out
    status, out, _ = await put_settings(tenant, {"zero_touch": {**rule, "image_ids": [IMAGE]}})
    status, enrolled, _ = await api.as_(None).call("POST", "/v1/agent/enroll/zero-touch", json=body(_aws_evidence()))
    assert status == 201 and enrolled["tenant_id"] == tenant.tenant_id, enrolled
    agent = BareAgent(api, key, enrolled["key_id"], enrolled["tenant_id"])
    status, out, released = await agent.request(tenant.key_id, ECHOED, evidence=_aws_evidence())
    assert status == 200 and len(released) == 32, out

    # The same document again (lifted from the VM): refused, and audited as a replay.
    status, out, _ = await api.as_(None).call("POST", "/v1/agent/enroll/zero-touch", json=body(
        _aws_evidence(), "thief", Ed25519PrivateKey.generate()))
    assert status == 403 and out["field"] == "evidence", out
    # Another account's VM: refused.
    other = fx.aws_document(account="999999999999", instance="i-0fff")
    status, out, _ = await api.as_(None).call("POST", "/v1/agent/enroll/zero-touch", json=body(
        {"kind": "aws", "document": other.decode(), "rsa2048": fx.aws_sign(other)}, "other", Ed25519PrivateKey.generate()))
    assert status == 401, out
    records = await audit_records_until(tenant.admin, lambda rs: any(r["action"] == "access.denied" for r in rs))
    enrolments = [r for r in records if r["action"] == "device.enrolled"]
    assert len(enrolments) == 1 and enrolments[0]["actor"]["auth"] == "zero_touch", enrolments
    status, devices, _ = await tenant.admin.call("GET", "/v1/devices")
    assert [d["groups"] for d in devices["items"]] == [["zero-touch"]], devices


async def put_settings(tenant, settings: dict):
    status, out, _ = await tenant.team.admin.call("PUT", "/v1/tenant/settings", json=settings)
    if status == 202:
        return await tenant.team.second_admin.call(
            "POST", f"/v1/tenant/settings/changes/{out['pending_change']['change_id']}/confirm")
    return status, out, None
