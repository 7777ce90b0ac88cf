"""Bring your own key: material wrapped (RSA-OAEP-3072 with SHA-256, or HPKE to an X25519 key) to a
service-provided import key becomes a tenant key that agents receive unchanged; malformed imports
are refused with a clear 4xx and create nothing; export is off unless the key was created
exportable, and always wrapped."""

from __future__ import annotations

import base64
import secrets
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives import hashes, hpke, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from .helpers import EU_FACTS, BareAgent, audit_records_until, make_tenant

OAEP = padding.OAEP(mgf=padding.MGF1(hashes.SHA256()), algorithm=hashes.SHA256(), label=None)
HPKE = "HPKE_X25519_HKDF_SHA256_AES_256_GCM"
# Written out here rather than imported, so the test checks the documented wire format.
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


def _hpke_info(tenant_id: str, key_id: str, token: str) -> bytes:
    return b"strongroom key import v1\x00" + f"{tenant_id}\x00{key_id}\x00{token}".encode()


def _hpke_wrap(public_b64: str, material: bytes, info: bytes) -> str:
    public = X25519PublicKey.from_public_bytes(base64.b64decode(public_b64))
    return base64.b64encode(SUITE.encrypt(material, public, info=info)).decode()


def _wrap_to(params: dict, material: bytes) -> str:
    public = serialization.load_der_public_key(base64.b64decode(params["public_key"]))
    return base64.b64encode(public.encrypt(material, OAEP)).decode()


async def test_imported_key_is_released_unchanged_and_bad_imports_change_nothing(api):
    tenant = await make_tenant(api)
    admin = tenant.admin
    agent = await BareAgent.enroll(tenant, api)
    status, params, _ = await admin.call("GET", "/v1/custody/import-params")
    assert status == 200 and params["wrapping_algorithm"] == "RSAES_OAEP_SHA_256" and params["key_size"] == 3072, params
    status, explicit, _ = await admin.call("GET", "/v1/custody/import-params?wrapping_algorithm=RSAES_OAEP_SHA_256")
    assert status == 200 and explicit["wrapping_algorithm"] == "RSAES_OAEP_SHA_256", explicit
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


async def test_x25519_hpke_import_is_bound_to_tenant_key_and_token_and_bad_imports_change_nothing(api, stack):
    tenant = await make_tenant(api)
    other = await make_tenant(api)
    admin = tenant.admin
    agent = await BareAgent.enroll(tenant, api)
    status, out, _ = await admin.call("GET", "/v1/custody/import-params?wrapping_algorithm=RSAES_PKCS1_V1_5")
    assert status == 400 and out["field"] == "wrapping_algorithm", out
    status, params, _ = await admin.call("GET", f"/v1/custody/import-params?wrapping_algorithm={HPKE}")
    assert status == 200 and params["wrapping_algorithm"] == HPKE and params["tenant_id"] == tenant.tenant_id, params
    assert len(base64.b64decode(params["public_key"])) == 32 and params["key_id"].startswith("key_")
    token, key_id = params["import_token"], params["key_id"]
    info = _hpke_info(tenant.tenant_id, key_id, token)
    assert base64.b64decode(params["hpke_info"]) == info
    status, second, _ = await admin.call("GET", f"/v1/custody/import-params?wrapping_algorithm={HPKE}")
    assert second["public_key"] != params["public_key"] and second["import_token"] != token

    material = secrets.token_bytes(32)
    good = {"name": "byok-x25519", "algorithm": "AES-256", "import_token": token,
            "wrapped_key_material": _hpke_wrap(params["public_key"], material, info)}
    stranger = base64.b64encode(X25519PrivateKey.generate().public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw)).decode()
    sealed = bytearray(base64.b64decode(good["wrapped_key_material"]))
    sealed[40] ^= 1
    status, before, _ = await admin.call("GET", "/v1/keys")
    bad = [
        # Bound to another tenant, another key id, another token: each fails to open.
        (_hpke_wrap(params["public_key"], material, _hpke_info(other.tenant_id, key_id, token)), "wrapped_key_material"),
        (_hpke_wrap(params["public_key"], material, _hpke_info(tenant.tenant_id, second["key_id"], token)), "wrapped_key_material"),
        (_hpke_wrap(params["public_key"], material, _hpke_info(tenant.tenant_id, key_id, second["import_token"])), "wrapped_key_material"),
        (_hpke_wrap(stranger, material, info), "wrapped_key_material"),  # wrapped to another X25519 key
        (base64.b64encode(bytes(sealed)).decode(), "wrapped_key_material"),  # tampered
        (base64.b64encode(bytes(sealed[:40])).decode(), "wrapped_key_material"),  # truncated
        (_hpke_wrap(params["public_key"], material[:24], info), "wrapped_key_material"),  # AES-192 size for AES-256
        ("%%%", "wrapped_key_material"),
    ]
    for wrapped, field in bad:
        status, out, _ = await admin.call("POST", "/v1/keys/import", json={**good, "wrapped_key_material": wrapped})
        assert 400 <= status < 500 and out["field"] == field, (field, status, out)
    # Another tenant cannot use this tenant's token, even with correctly wrapped material.
    status, out, _ = await other.admin.call("POST", "/v1/keys/import", json=good)
    assert status == 422 and out["field"] == "import_token", out
    status, after, _ = await admin.call("GET", "/v1/keys")
    assert after["items"] == before["items"]

    status, key, _ = await admin.call("POST", "/v1/keys/import", json=good)
    assert status == 201 and key["key_id"] == key_id and key["state"] == "active", key
    status, out, _ = await admin.call("POST", "/v1/keys/import", json={**good, "name": "byok-x25519-2"})
    assert status == 422 and out["field"] == "import_token"  # single use
    status, out, released = await agent.request(key_id, EU_FACTS)
    assert status == 200 and released == material

    # An expired import key is refused and creates nothing.
    keysvc_db = stack.client[f"{stack.key_settings.db_prefix}keysvc"]
    await keysvc_db["import_keys"].update_one(
        {"tenant_id": tenant.tenant_id, "import_token": second["import_token"]},
        {"$set": {"expires_at": datetime.now(UTC) - timedelta(seconds=1)}})
    wrapped = _hpke_wrap(second["public_key"], material, _hpke_info(tenant.tenant_id, second["key_id"], second["import_token"]))
    status, out, _ = await admin.call("POST", "/v1/keys/import", json={
        "name": "late", "import_token": second["import_token"], "wrapped_key_material": wrapped})
    assert status == 422 and out["field"] == "import_token", out
    status, out, _ = await admin.call("GET", f"/v1/keys/{second['key_id']}")
    assert status == 404

    # The import private keys are stored only wrapped: no raw 32-byte X25519 scalar sits in the store.
    stored = await keysvc_db["import_keys"].find({"tenant_id": tenant.tenant_id}).to_list(None)
    assert stored and all(len(bytes(d["wrapped"])) == 1 + 12 + 32 + 16 for d in stored)
    records = await audit_records_until(
        admin, lambda rs: any(r["action"] == "key.imported" and r["resource"]["id"] == key_id for r in rs))
    imported = next(r for r in records if r["action"] == "key.imported" and r["resource"]["id"] == key_id)
    assert HPKE in str(imported), imported
