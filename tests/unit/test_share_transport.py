"""Shares in transit (shared/crypto/shares.py): a share sealed for one purpose and round opens only
there; tampering, another signer or another recipient is refused."""

from __future__ import annotations

import base64

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from shared.crypto import shares

SHARE = "academic acid acne acquire acrobat activity actress adapt adequate adjust admit adorn adult advance"


def _key_id(signing_key: Ed25519PrivateKey) -> str:
    return shares.key_id(signing_key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))


@pytest.fixture
def keysvc() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def transport() -> X25519PrivateKey:
    return shares.new_transport_key()


def _public(private: X25519PrivateKey) -> bytes:
    return private.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _published(keysvc, transport, *, purpose=shares.UNSEAL, round_id="unr_1") -> dict:
    return shares.published_transport_key(keysvc, _public(transport), purpose=purpose, round_id=round_id)


def _sealed(keysvc, transport, *, purpose=shares.UNSEAL, round_id="unr_1") -> str:
    return shares.seal_share(SHARE, _published(keysvc, transport, purpose=purpose, round_id=round_id),
                             pinned_key_id=_key_id(keysvc), purpose=purpose, round_id=round_id)


def _flip(b64: str, at: int = -1) -> str:
    raw = bytearray(base64.b64decode(b64))
    raw[at] ^= 1
    return base64.b64encode(bytes(raw)).decode()


def test_each_round_has_a_fresh_transport_key_not_derived_from_the_signing_key(keysvc):
    assert shares.new_transport_key().public_key() != shares.new_transport_key().public_key()
    first, second = shares.new_transport_key(), shares.new_transport_key()
    assert _public(first) != _public(second)
    sealed = _sealed(keysvc, first)
    with pytest.raises(shares.ShareTransportError):
        shares.open_share(sealed, second, shares.inbound_info(shares.UNSEAL, "unr_1"))


def test_a_sealed_share_opens_only_for_its_purpose_and_round(keysvc, transport):
    sealed = _sealed(keysvc, transport)
    assert SHARE not in sealed
    assert shares.open_share(sealed, transport, shares.inbound_info(shares.UNSEAL, "unr_1")) == SHARE
    for info in (shares.inbound_info(shares.UNSEAL, "unr_2"), shares.inbound_info(shares.REKEY_VERIFY, "unr_1")):
        with pytest.raises(shares.ShareTransportError, match="does not open") as err:
            shares.open_share(sealed, transport, info)
        assert "academic" not in str(err.value)


@pytest.mark.parametrize("bad", ["", "not base64!", base64.b64encode(b"short").decode(), "AAAA" * 400])
def test_tampered_or_malformed_sealed_shares_are_refused(keysvc, transport, bad):
    info = shares.inbound_info(shares.UNSEAL, "unr_1")
    for candidate in (bad, _flip(_sealed(keysvc, transport)), _flip(_sealed(keysvc, transport), 0)):
        with pytest.raises(shares.ShareTransportError):
            shares.open_share(candidate, transport, info)


def test_the_cli_seals_only_to_a_transport_key_signed_by_the_pinned_key_for_this_round(keysvc, transport):
    published = _published(keysvc, transport)
    with pytest.raises(shares.ShareTransportError, match="not the pinned"):
        shares.seal_share(SHARE, published, pinned_key_id="0" * 16, purpose=shares.UNSEAL, round_id="unr_1")
    # A gateway swapping in its own transport key, keeping keysvc's signing key and signature: refused.
    forged = {**published, "public_key": base64.b64encode(_public(shares.new_transport_key())).decode()}
    with pytest.raises(shares.ShareTransportError, match="signature"):
        shares.seal_share(SHARE, forged, pinned_key_id=_key_id(keysvc), purpose=shares.UNSEAL, round_id="unr_1")
    # A key signed for another round or purpose is not this round's.
    for purpose, round_id in ((shares.UNSEAL, "unr_2"), (shares.REKEY_VERIFY, "unr_1")):
        with pytest.raises(shares.ShareTransportError, match="signature"):
            shares.seal_share(SHARE, published, pinned_key_id=_key_id(keysvc), purpose=purpose, round_id=round_id)
    # ...or its own signing key as well: the pin does not match.
    other = Ed25519PrivateKey.generate()
    with pytest.raises(shares.ShareTransportError, match="not the pinned"):
        shares.seal_share(SHARE, _published(other, transport), pinned_key_id=_key_id(keysvc),
                          purpose=shares.UNSEAL, round_id="unr_1")


def _delivery(keysvc, public, *, purpose=shares.INIT, fp="rootfp", custodian="usr_a", number=1):
    return shares.seal_to_custodian(SHARE, public, purpose=purpose, root_fingerprint=fp, custodian_id=custodian,
                                    number=number, signing_key=keysvc)


def test_a_share_opens_only_with_its_custodians_key_and_a_signature_by_the_pinned_key(keysvc):
    private, public = shares.new_recipient_key()
    delivery = _delivery(keysvc, public)
    assert SHARE not in str(delivery)
    pinned = _key_id(keysvc)
    assert shares.open_custodian_share(delivery, private, pinned_key_id=pinned) == SHARE

    def refused(candidate, *, key=private, pin=pinned):
        with pytest.raises(shares.ShareTransportError):
            shares.open_custodian_share(candidate, key, pinned_key_id=pin)

    refused(delivery, pin="0" * 16)
    refused(delivery, key=shares.new_recipient_key()[0])  # another custodian's key
    for field, value in (("purpose", shares.REKEY), ("root_fingerprint", "otherfp"), ("custodian_id", "usr_b"),
                         ("number", 2), ("sealed_share", _flip(delivery["sealed_share"]))):
        refused({**delivery, field: value})
    # A gateway that had a share sealed to its own key cannot pass it off as sealed to ours.
    _, gateway_public = shares.new_recipient_key()
    refused({**_delivery(keysvc, gateway_public), "recipient_public_key": public})
    with pytest.raises(shares.ShareTransportError, match="public key"):
        _delivery(keysvc, "not a key")
