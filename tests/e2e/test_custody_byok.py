"""Bring your own key: material wrapped (RSA-OAEP-3072, SHA-256) to a service-provided import key
becomes a tenant key that agents receive unchanged; malformed imports are refused with a clear
4xx and create nothing; export is off unless the key was created exportable, and always wrapped."""

from __future__ import annotations

import base64
import secrets

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from .helpers import EU_FACTS, BareAgent, make_tenant, audit_records_until

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def _wrap_to(params: dict, material: bytes) -> str:
    public = serialization.load_der_public_key(base64.b64decode(params["public_key"]))
    return base64.b64encode(public.encrypt(material, OAEP)).decode()


async def test_imported_key_is_released_unchanged_and_bad_imports_change_nothing(api):
    tenant = await make_tenant(api)
    admin = tenant.admin
    agent = await BareAgent.enroll(tenant, api)
    status, params, _ = await admin.call("GET", "/v1/custody/import-params")
    assert status == 200 and params["wrapping_algorithm"] == "RSAES_OAEP_SHA_256" and params["key_size"] == 3072, params
    public = serialization.load_der_public_key(base64.b64decode(params["public_key"]))
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 3072
    material = secrets.token_bytes(32)
    good = {"name": "byok", "algorithm": "AES-256", "import_token": params["import_token"],
            "wrapped_key_material": _wrap_to(params, material)}

    status, before, _ = await admin.call("GET", "/v1/keys")
    bad = [
        ({**good, "wrapped_key_material": "not base64!"}, "wrapped_key_material"),
        ({**good, "wrapped_key_material": base64.b64encode(b"\x00" * 384).decode()}, "wrapped_key_material"),
        ({**good, "wrapped_key_material": _wrap_to(params, material[:16])}, "wrapped_key_material"),
        ({**good, "import_token": "imp_" + "0" * 32}, "import_token"),
        ({**good, "algorithm": "AES-512"}, "algorithm"),
        ({k: v for k, v in good.items() if k != "import_token"}, "import_token"),
    ]
    for body, field in bad:
        status, out, _ = await admin.call("POST", "/v1/keys/import", json=body)
        assert 400 <= status < 500 and out["field"] == field, (field, status, out)
    status, after, _ = await admin.call("GET", "/v1/keys")
    assert after["items"] == before["items"]

    status, key, _ = await admin.call("POST", "/v1/keys/import", json=good)
    assert status == 201 and key["state"] == "active" and not key["exportable"], key
    status, out, _ = await admin.call("POST", "/v1/keys/import", json={**good, "name": "byok-2"})
    assert status == 422 and out["field"] == "import_token"  # single use

    status, out, released = await agent.request(key["key_id"], EU_FACTS)
    assert status == 200 and released == material

    # Export is off for a key not created exportable.
    caller = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    caller_der = base64.b64encode(caller.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)).decode()
    status, out, _ = await admin.call("POST", f"/v1/keys/{key['key_id']}/export", json={"public_key": caller_der})
    assert status == 409 and "exportable" in out["detail"], out
    records = await audit_records_until(
        admin, lambda rs: any(r["action"] == "key.imported" and r["resource"]["id"] == key["key_id"] for r in rs))
    assert any(r["action"] == "key.imported" and r["resource"]["id"] == key["key_id"] for r in records)


async def test_exportable_key_exports_only_wrapped_to_the_callers_key(api):
    tenant = await make_tenant(api)
    admin = tenant.admin
    agent = await BareAgent.enroll(tenant, api)
    status, key, _ = await admin.call("POST", "/v1/keys", json={"name": "portable", "exportable": True})
    assert status == 201 and key["exportable"]
    status, _, released = await agent.request(key["key_id"], EU_FACTS)

    caller = rsa.generate_private_key(public_exponent=65537, key_size=3072)
    der = caller.public_key().public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    ec_der = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for public_key in (base64.b64encode(ec_der).decode(), base64.b64encode(b"junk").decode(), "%%%"):
        status, out, _ = await admin.call("POST", f"/v1/keys/{key['key_id']}/export", json={"public_key": public_key})
        assert status == 422 and out["field"] == "public_key", out

    status, out, _ = await admin.call("POST", f"/v1/keys/{key['key_id']}/export", json={"public_key": base64.b64encode(der).decode()})
    assert status == 200, out
    assert caller.decrypt(base64.b64decode(out["wrapped_key_material"]), OAEP) == released

    # Deactivated: export refused unless the tenant allows it for re-encryption.
    await admin.call("POST", f"/v1/keys/{key['key_id']}/state", json={"action": "deactivate", "reason": "retire"})
    body = {"public_key": base64.b64encode(der).decode()}
    status, out, _ = await admin.call("POST", f"/v1/keys/{key['key_id']}/export", json=body)
    assert status == 409
    await admin.call("PUT", "/v1/custody/settings", json={"export_deactivated": True})
    status, out, _ = await admin.call("POST", f"/v1/keys/{key['key_id']}/export", json=body)
    assert status == 200
    status, out, _ = await agent.request(key["key_id"], EU_FACTS)
    assert status == 409  # never released to agents
