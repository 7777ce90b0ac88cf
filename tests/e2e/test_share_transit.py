"""Root-of-trust shares travel only sealed between the custodian and keysvc: every raw message
published to the broker (RPC requests and replies included), every stored document and every log
line is searched for them; malformed, replayed or misdirected sealed shares are refused naming the
field, and change nothing."""

from __future__ import annotations

import asyncio
import base64
import json

import bson
import pytest
import structlog
from aio_pika.exchange import Exchange
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PublicKey

from shared.crypto import shares as transit

from .helpers import keysvc_key_id, new_shares, post_share, provider_admin, root_custodian, root_custodians


@pytest.fixture
def wire(monkeypatch) -> list[bytes]:
    """The body of every message any service of the stack publishes to RabbitMQ."""
    seen: list[bytes] = []
    publish = Exchange.publish

    async def spy(self, message, *args, **kwargs):
        seen.append(bytes(message.body))
        return await publish(self, message, *args, **kwargs)

    monkeypatch.setattr(Exchange, "publish", spy)
    return seen


async def _progress(provider) -> dict:
    status, out, _ = await provider.call("GET", "/v1/custody/status")
    assert status == 200, out
    return out["unseal_progress"]


async def _stored(stack) -> list[bytes]:
    docs = []
    for name in await stack.client.list_database_names():
        if name.startswith(stack.key_settings.db_prefix):
            for coll in await stack.client[name].list_collection_names():
                async for doc in stack.client[name][coll].find({}):
                    docs.append(bson.encode(doc))
    return docs


def _seal(stack, transport: dict, share: str, purpose: str, for_round: str) -> str:
    if (purpose, for_round) == (transport["purpose"], transport["round_id"]):
        return transit.seal_share(share, transport, pinned_key_id=keysvc_key_id(stack), purpose=purpose, round_id=for_round)
    # The CLI refuses a key signed for another purpose or round; a hostile client seals anyway.
    public = X25519PublicKey.from_public_bytes(base64.b64decode(transport["public_key"]))
    raw = transit.SUITE.encrypt(share.encode(), public, info=transit.inbound_info(purpose, for_round))
    return base64.b64encode(raw).decode()


async def _rekey_verified_only_sealed(custodians, provider, stack, sealed) -> list[str]:
    # Re-key: new shares come back sealed; an unseal-sealed share is refused for verification.
    status, rekey = await new_shares(custodians, stack, "/v1/custody/rekey", {"threshold": 2})
    assert status == 200, rekey
    new = rekey["opened"]
    status, out, _ = await custodians[0].call("POST", "/v1/custody/rekey/verify",
                                              json={"sealed_share": sealed(new[0]), "round_id": rekey["new_fingerprint"]})
    assert status == 422 and out["field"] == "sealed_share", out
    status, out, _ = await custodians[0].call("POST", "/v1/custody/rekey/verify", json={"share": new[0]})
    assert status == 400 and out["field"] == "share", out
    status, pending, _ = await provider.call("GET", "/v1/custody/status")
    assert pending["rekey"]["verified_shares"] == 0
    for n in (1, 2):
        status, out = await post_share(custodians[n], stack, new[n], purpose="rekey-verify")
        assert status == 200, out
    assert out["verified"], out
    return new


# The default lease (30 s): with the test stack's 5 s, a busy box let the stopped instance's lease
# lapse before the replay below, and a fresh round replaced the one the test replays into.
@pytest.mark.stack(keysvc={"lease_seconds": 30.0})
async def test_no_share_appears_on_the_bus_in_the_store_or_in_logs_and_bad_sealed_shares_change_nothing(api, stack, wire):
    provider = await provider_admin(api)
    custodians = await root_custodians(api, 3)
    with structlog.testing.capture_logs() as logs:
        await stack.stop("keysvc")
        stack.root_key = None
        await stack.start("keysvc")
        # A custodian key no share can be sealed to is refused at enrolment, naming the field.
        newcomer = await root_custodian(api, "rc-bad-key", enrol=False)
        for key in ("not base64!", base64.b64encode(bytes(32)).decode()):
            status, out, _ = await newcomer.call("PUT", "/v1/custody/custodian-key", json={"public_key": key})
            assert status == 422 and out["field"] == "public_key", out
        status, out, _ = await provider.call("GET", "/v1/custody/status")
        assert not out["initialized"], out
        status, init = await new_shares(custodians, stack, "/v1/custody/init", {"threshold": 2})
        assert status == 201, init
        shares = init["opened"]

        # Bad input, each refused naming its field; the round stays empty.
        status, transport, _ = await custodians[0].call("POST", "/v1/custody/transport-key", json={"purpose": "unseal"})
        assert status == 200 and transport["signing_key_id"] == keysvc_key_id(stack), transport
        round_id = transport["round_id"]

        def sealed(share=shares[0], purpose="unseal", for_round=round_id):
            return _seal(stack, transport, share, purpose, for_round)

        for body, code, field in (
            ({"share": shares[0]}, 400, "share"),                                              # plaintext: refused
            ({"sealed_share": "not base64!", "round_id": round_id}, 422, "sealed_share"),      # malformed
            ({"sealed_share": "AAAA", "round_id": round_id}, 422, "sealed_share"),             # not HPKE
            ({"sealed_share": sealed(for_round="unr_other"), "round_id": round_id}, 422, "sealed_share"),  # other round
            ({"sealed_share": sealed(purpose="rekey-verify"), "round_id": round_id}, 422, "sealed_share"),  # other purpose
            ({"sealed_share": sealed(for_round="unr_other"), "round_id": "unr_other"}, 409, "round_id"),   # stale round
            ({"sealed_share": sealed(), "round_id": "bad round!"}, 422, "round_id"),
        ):
            status, out, _ = await custodians[0].call("POST", "/v1/custody/unseal", json=body)
            assert status == code and out["field"] == field, (body.keys(), out)
            assert shares[0] not in json.dumps(out)
        assert (await _progress(provider))["submitted"] == 0

        captured = sealed()
        status, out, _ = await custodians[0].call("POST", "/v1/custody/unseal",
                                                  json={"sealed_share": captured, "round_id": round_id})
        assert status == 200 and out == {"sealed": True, "submitted": 1, "needed": 2}, out

        # A restarted instance holds none of the round's earlier shares: a captured sealed share replayed
        # into the same round (still open: the threshold was not reached, so no instance ended it) is
        # still refused, and so is one claiming another round.
        await stack.stop("keysvc")
        await stack.start("keysvc")
        before = await _progress(provider)
        for claimed, code, field in ((round_id, 409, "sealed_share"), ("unr_other", 409, "round_id")):
            status, out, _ = await custodians[1].call("POST", "/v1/custody/unseal",
                                                      json={"sealed_share": captured, "round_id": claimed})
            assert status == code and out["field"] == field, out
        assert await _progress(provider) == before
        for n in (0, 1):
            # Until the stopped instance's registration is gone (withdrawn at its stop, or lapsed when
            # a busy box abandoned the stop), the old round stays current and the new instance, which
            # holds none of its transport key, answers 503 "submit again": as the API says, submit again.
            deadline = asyncio.get_running_loop().time() + 60
            while True:
                status, out = await post_share(custodians[n], stack, shares[n])
                if status != 503 or asyncio.get_running_loop().time() > deadline:
                    break
                await asyncio.sleep(0.5)
            assert status == 200, out

        new = await _rekey_verified_only_sealed(custodians, provider, stack, sealed)
        await asyncio.sleep(0.3)  # let the last events and audit records land

    assert len(wire) > 20 and any(b"verify_rekey" in m for m in wire) and any(b"recipient_public_key" in m for m in wire)
    haystack = wire + await _stored(stack) + [json.dumps(entry, default=str).encode() for entry in logs]
    for share in shares + new:
        for needle in (share, " ".join(share.split()[:4])):
            assert not any(needle.encode() in blob for blob in haystack), "a share crossed in the clear"
