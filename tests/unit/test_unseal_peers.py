"""keysvc instances trust what another instance sealed to them only when it is vouched for with
keysvc's signing key: a registration, a share or a root hand-off planted by anyone else is ignored."""

from __future__ import annotations

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.keysvc.unseal import Peer, _info, _seal_to


def _registration(peer: Peer) -> dict:
    return {"peer_id": peer.peer_id, "public_key": peer.public, "signature": peer.signature()}


def test_a_share_sealed_and_vouched_for_by_a_sibling_opens_and_nothing_else_does():
    key = Ed25519PrivateKey.generate()
    a, b = Peer(key), Peer(key)
    stranger = Peer(Ed25519PrivateKey.generate())
    assert a.trusts(_registration(b)) and not a.trusts(_registration(stranger))
    assert not a.trusts({**_registration(b), "public_key": stranger.public})  # a swapped key breaks the signature

    info = _info("unseal share", "unr_1", b.peer_id, "0")
    sealed = _seal_to(_registration(b), b"share words", info)
    assert b.open(sealed, info, a.sign(sealed, info)) == b"share words"
    assert b.open(sealed, info, stranger.sign(sealed, info)) is None  # planted by someone without the key file
    assert b.open(sealed, info, None) is None
    assert b.open(sealed, _info("unseal share", "unr_1", b.peer_id, "1"), a.sign(sealed, info)) is None  # moved
    assert a.open(sealed, info, a.sign(sealed, info)) is None  # sealed to b only
    assert "share" not in repr(a) and a.peer_id in repr(a)
