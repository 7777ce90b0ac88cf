"""Shares in transit (shared/crypto/shares.py): a share sealed for one purpose and round opens only
there; tampering, another signer or another recipient is refused."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from shared.crypto import shares

SHARE = "academic acid acne acquire acrobat activity actress adapt adequate adjust admit adorn adult advance"


def _key_id(signing_key: Ed25519PrivateKey) -> str:
    return shares.key_id(signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@pytest.fixture
def keysvc() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def _sealed(keysvc, *, purpose=shares.UNSEAL, round_id="unr_1") -> str:
    transport = shares.published_transport_key(keysvc)
    return shares.seal_share(SHARE, transport, pinned_key_id=_key_id(keysvc), purpose=purpose, round_id=round_id)


def _flip(b64: str, at: int = -1) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_every_instance_sharing_the_signing_key_derives_the_same_transport_key(keysvc):
    again = Ed25519PrivateKey.from_private_bytes(keysvc.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()))
    assert shares.published_transport_key(again) == shares.published_transport_key(keysvc)
    assert shares.published_transport_key(Ed25519PrivateKey.generate())["public_key"] != \
        shares.published_transport_key(keysvc)["public_key"]


def test_a_sealed_share_opens_only_for_its_purpose_and_round(keysvc):
    sealed = _sealed(keysvc)
    assert SHARE not in sealed
    assert shares.open_share(sealed, keysvc, shares.inbound_info(shares.UNSEAL, "unr_1")) == SHARE
    for info in (shares.inbound_info(shares.UNSEAL, "unr_2"), shares.inbound_info(shares.REKEY_VERIFY, "unr_1")):
        with pytest.raises(shares.ShareTransportError, match="does not open") as err:
            shares.open_share(sealed, keysvc, info)
        assert "academic" not in str(err.value)
    with pytest.raises(shares.ShareTransportError):
        shares.open_share(sealed, Ed25519PrivateKey.generate(), shares.inbound_info(shares.UNSEAL, "unr_1"))


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"short").decode(), "AAAA" * 400])
def test_tampered_or_malformed_sealed_shares_are_refused(keysvc, bad):
    info = shares.inbound_info(shares.UNSEAL, "unr_1")
    for candidate in (bad, _flip(_sealed(keysvc)), _flip(_sealed(keysvc), 0)):
        with pytest.raises(shares.ShareTransportError):
            shares.open_share(candidate, keysvc, info)


def test_the_cli_seals_only_to_a_transport_key_signed_by_the_pinned_key(keysvc):
    transport = shares.published_transport_key(keysvc)
    with pytest.raises(shares.ShareTransportError, match="not the pinned"):
        shares.seal_share(SHARE, transport, pinned_key_id="0" * 16, purpose=shares.UNSEAL, round_id="unr_1")
    # A gateway swapping in its own transport key, keeping keysvc's signing key and signature: refused.
    forged = {**transport, "public_key": shares.published_transport_key(Ed25519PrivateKey.generate())["public_key"]}
    with pytest.raises(shares.ShareTransportError, match="signature"):
        shares.seal_share(SHARE, forged, pinned_key_id=_key_id(keysvc), purpose=shares.UNSEAL, round_id="unr_1")
    # ...or its own signing key as well: the pin does not match.
    other = Ed25519PrivateKey.generate()
    with pytest.raises(shares.ShareTransportError, match="not the pinned"):
        shares.seal_share(SHARE, shares.published_transport_key(other), pinned_key_id=_key_id(keysvc),
                          purpose=shares.UNSEAL, round_id="unr_1")


def _delivery(keysvc, public, *, purpose=shares.INIT, fp="rootfp"):
    return shares.seal_delivery([SHARE, SHARE + " x"], public, purpose=purpose, root_fingerprint=fp, signing_key=keysvc)


def test_new_shares_open_only_with_the_request_key_and_a_signature_by_the_pinned_key(keysvc):
    private, public = shares.new_recipient_key()
    answer = _delivery(keysvc, public)
    assert SHARE not in str(answer)
    pinned = _key_id(keysvc)
    opened = shares.open_delivery(answer, private, pinned_key_id=pinned, purpose=shares.INIT, root_fingerprint="rootfp")
    assert opened == [SHARE, SHARE + " x"]

    def refused(candidate, *, key=private, purpose=shares.INIT, fp="rootfp", pin=pinned):
        with pytest.raises(shares.ShareTransportError):
            shares.open_delivery(candidate, key, pinned_key_id=pin, purpose=purpose, root_fingerprint=fp)

    refused(answer, purpose=shares.REKEY)
    refused(answer, fp="otherfp")
    refused(answer, pin="0" * 16)
    refused(answer, key=shares.new_recipient_key()[0])
    refused({**answer, "sealed_shares": answer["sealed_shares"][::-1]})
    refused({**answer, "sealed_shares": [_flip(answer["sealed_shares"][0]), answer["sealed_shares"][1]]})
    # A gateway that asked for the shares under its own key cannot re-seal them to ours unsigned.
    _, gateway_public = shares.new_recipient_key()
    refused({**_delivery(keysvc, gateway_public), "recipient_public_key": public})
    with pytest.raises(shares.ShareTransportError, match="recipient_public_key"):
        _delivery(keysvc, "not a key")
