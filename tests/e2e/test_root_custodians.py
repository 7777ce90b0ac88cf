"""Root custodians: the service-wide root of trust is held by named people, not by the provider's
admins. Each custodian enrols their own X25519 public key; init and re-key seal each share to a
different custodian; the threshold is at least 2 (1-of-1 only with keysvc's explicit dev setting);
whoever starts a re-key cannot verify it alone; a provider admin never receives or submits a share;
the unseal transport key is fresh per round, so keysvc's signing key file opens no captured share."""

from __future__ import annotations

import base64

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from shared.crypto import shares as transit

from .helpers import (
    keysvc_key_id,
    my_share,
    new_shares,
    post_share,
    provider_admin,
    root_custodian,
    root_custodians,
)


async def _restart_sealed(stack) -> None:
    await stack.stop("keysvc")
    stack.root_key = None
    await stack.start("keysvc")


async def test_a_provider_admin_can_neither_take_shares_nor_submit_them(api, stack):
    """The attack: one provider admin initialised (or re-keyed) custody 1-of-1, received every share
    sealed to their own key, verified alone, and with the store could then open every tenant's KEK."""
    await _restart_sealed(stack)
    provider = await provider_admin(api)
    _, own = transit.new_recipient_key()
    one_of_one = {"shares": 1, "threshold": 1, "recipient_public_key": own}
    for path in ("/v1/custody/init", "/v1/custody/rekey"):
        status, out, _ = await provider.call("POST", path, json=one_of_one)
        assert status == 403, (path, status, out)
    for path, body in (("/v1/custody/transport-key", {"purpose": "unseal"}), ("/v1/custody/unseal", {}),
                       ("/v1/custody/rekey/verify", {}), ("/v1/custody/rekey/cancel", {})):
        status, out, _ = await provider.call("POST", path, json=body)
        assert status == 403, (path, out)
    status, out, _ = await provider.call("GET", "/v1/custody/shares/mine")
    assert status == 403, out
    # A provider admin may watch the seal status (it names no share and opens nothing).
    status, out, _ = await provider.call("GET", "/v1/custody/status")
    assert status == 200 and out["sealed"] and not out["initialized"], out

    # Nor may they become a custodian alone: the grant waits for a second provider admin, a service
    # account may never hold the role, and provider_admin and root_custodian are never held together.
    status, out, _ = await provider.call("POST", "/v1/users", json={"username": "robot", "roles": ["root_custodian"],
                                                                     "account": "service"})
    assert status == 422 and out["field"] == "roles" and "service account" in out["detail"], out
    status, out, _ = await provider.call("POST", "/v1/users", json={"username": "alone", "roles": ["root_custodian"],
                                                                     "email": "alone@provider.example"})
    assert status == 201 and out["roles"] == [] and out["pending_roles"][0]["role"] == "root_custodian", out
    status, denied, _ = await provider.call("POST", f"/v1/users/{out['user_id']}/roles/root_custodian/confirm")
    assert status == 403, denied
    second = await root_custodian(api, "rc-y", enrol=False)
    status, out, _ = await provider.call("POST", f"/v1/users/{second.user_id}/roles", json={"grant": ["provider_admin"]})
    assert status == 422, out


async def test_each_share_is_sealed_to_a_different_enrolled_custodian_and_each_unseals_once(api, stack):
    await _restart_sealed(stack)
    provider = await provider_admin(api)
    custodians = await root_custodians(api, 3)
    late = await root_custodian(api, "rc-not-enrolled", enrol=False)
    # The layout is refused naming its field: 1-of-1, more shares than custodians, an unenrolled or
    # unknown custodian, the provider admin named as one.
    for body, field in (({"threshold": 1}, "threshold"),
                        ({"threshold": 2, "shares": 4}, "shares"),
                        ({"threshold": 2, "custodians": [c.user_id for c in custodians[:2]] + [late.user_id]}, "custodians"),
                        ({"threshold": 2, "custodians": [custodians[0].user_id, provider.user_id]}, "custodians"),
                        ({"threshold": 2, "custodians": [custodians[0].user_id] * 2}, "custodians")):
        status, out = await new_shares(custodians[:1], stack, "/v1/custody/init", body, starter=custodians[0])
        assert status == 422 and out.get("field") == field, (body, out)
    # Who holds the role is the gateway's to say, from the account store: a body cannot claim it.
    status, out, _ = await custodians[0].call("POST", "/v1/custody/init", json={
        "threshold": 2, "custodians": [custodians[0].user_id, provider.user_id], "eligible": [provider.user_id]})
    assert status == 422 and out["field"] == "eligible", out
    status, init = await new_shares(custodians, stack, "/v1/custody/init", {"threshold": 2})
    assert status == 201 and init["threshold"] == 2 and init["shares"] == 3, init
    assert [c["custodian_id"] for c in init["custodians"]] == [c.user_id for c in custodians], init
    assert len(set(init["opened"])) == 3
    # Each custodian's share was shown once: a second fetch finds nothing; a non-custodian finds nothing.
    status, out = await my_share(custodians[0], stack)
    assert status == 404, out
    status, out = await my_share(late, stack)
    assert status == 404, out

    # One person submits one share per round: a second (someone else's) is refused.
    shares = init["opened"]
    status, out = await post_share(custodians[0], stack, shares[0])
    assert status == 200 and out == {"sealed": True, "submitted": 1, "needed": 2}, out
    status, out = await post_share(custodians[0], stack, shares[1])
    assert status == 409 and out["field"] == "sealed_share" and "already" in out["detail"], out
    status, out = await post_share(custodians[2], stack, shares[2])
    assert status == 200 and not out["sealed"], out


async def test_whoever_starts_a_rekey_cannot_verify_it_alone(api, stack):
    custodians = await root_custodians(api, 3)
    starter = custodians[0]
    status, rekey = await new_shares(custodians, stack, "/v1/custody/rekey", {"threshold": 2})
    assert status == 200, rekey
    new = rekey["opened"]
    status, out = await post_share(starter, stack, new[0], purpose="rekey-verify")
    assert status == 200 and out == {"verified": False, "submitted": 1, "needed": 2}, out
    # Even holding another custodian's new share, the starter's second submission does not count.
    status, out = await post_share(starter, stack, new[1], purpose="rekey-verify")
    assert status == 409 and "already" in out["detail"], out
    status, pending, _ = await starter.call("GET", "/v1/custody/status")
    assert pending["rekey"]["verified_shares"] == 1 and pending["rekey"]["status"] == "copying", pending
    status, out = await post_share(custodians[1], stack, new[1], purpose="rekey-verify")
    assert status == 200 and out["verified"] and out["root_fingerprint"] == rekey["new_fingerprint"], out


@pytest.mark.stack(keysvc={"allow_single_custodian": True})
async def test_one_of_one_only_with_keysvc_dev_setting(api, stack):
    await _restart_sealed(stack)
    (solo,) = await root_custodians(api, 1)
    status, init = await new_shares([solo], stack, "/v1/custody/init", {"threshold": 1})
    assert status == 201 and init["threshold"] == 1, init
    status, out = await post_share(solo, stack, init["opened"][0])
    assert status == 200 and not out["sealed"], out


def _derived_transport_key(stack) -> X25519PrivateKey:
    """What a transport key derived from keysvc's signing key file would be (the old scheme)."""
    from pathlib import Path

    key = serialization.load_pem_private_key(Path(stack.key_settings.signing_key_file).read_bytes(), password=None)
    seed = key.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    derived = HKDF(hashes.SHA256(), 32, salt=None, info=b"strongroom share transport key v1").derive(seed)
    return X25519PrivateKey.from_private_bytes(derived)


async def test_the_unseal_transport_key_is_fresh_per_round_and_not_derivable_from_keysvc_files(api, stack):
    await _restart_sealed(stack)
    custodians = await root_custodians(api, 2)
    status, init = await new_shares(custodians, stack, "/v1/custody/init", {"threshold": 2})
    assert status == 201, init
    share = init["opened"][0]
    status, first, _ = await custodians[0].call("POST", "/v1/custody/transport-key", json={"purpose": "unseal"})
    assert status == 200, first
    captured = transit.seal_share(share, first, pinned_key_id=keysvc_key_id(stack), purpose="unseal",
                                  round_id=first["round_id"])
    status, out, _ = await custodians[0].call("POST", "/v1/custody/unseal",
                                              json={"sealed_share": captured, "round_id": first["round_id"]})
    assert status == 200, out
    status, out = await post_share(custodians[1], stack, init["opened"][1])
    assert status == 200 and not out["sealed"], out

    # Whoever later steals keysvc's key files opens no sealed share captured from the wire.
    info = transit.inbound_info("unseal", first["round_id"])
    with pytest.raises(InvalidTag):
        transit.SUITE.decrypt(base64.b64decode(captured), _derived_transport_key(stack), info=info)

    # The next round has another transport key; the captured share does not open in it.
    await _restart_sealed(stack)
    status, second, _ = await custodians[0].call("POST", "/v1/custody/transport-key", json={"purpose": "unseal"})
    assert status == 200 and second["round_id"] != first["round_id"] and second["public_key"] != first["public_key"]
    status, out, _ = await custodians[0].call("POST", "/v1/custody/unseal",
                                              json={"sealed_share": captured, "round_id": second["round_id"]})
    assert status == 422 and out["field"] == "sealed_share", out
