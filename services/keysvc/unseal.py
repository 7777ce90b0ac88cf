"""Unsealing several keysvc instances at once: shares and the root key cross between them only
sealed to an instance's own key, never in the clear, in events or in the store.

Each instance, while it runs, holds an X25519 key pair in memory only and registers the public half
(`peers`, with an expiry it keeps renewing), signed with keysvc's Ed25519 signing key, so a
registration, a sealed share and a hand-off are trusted only from an instance holding that key file
(a store writer without it can plant nothing). A custodian's share, sealed in transit to the round
(shared/crypto/shares.py), reaches whichever instance takes the request; that instance opens it,
checks it against the shares already in the round, then adds it to the round document sealed (HPKE,
base mode, X25519/HKDF-SHA256/AES-256-GCM, `info` naming the round, the recipient and the share's
position) to every live registered instance. Every instance (told by custody.unseal_progress, or on
its next tick) opens the copies sealed to it and unseals once it holds a threshold. An unsealed
instance hands the root key, sealed the same way, to any live registered instance still sealed (one
restarted later, or one that registered after the round began); the recipient accepts it only with
the recorded fingerprint. A round expires; what it holds can be opened only by instances that were
alive when each share came in, and is useless once they stop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hpke, serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.asymmetric.x25519 import (
    X25519PrivateKey,
    X25519PublicKey,
)

from shared.crypto import shares as transit
from shared.events import new_id

from . import unseal_rounds as rounds
from .clock import now as _now
from .hierarchy import KeyHierarchy
from .rootkey import ShareError, Unsealer, fingerprint
from .store import KeyStore

log = structlog.get_logger("strongroom.keysvc")
SUITE = hpke.Suite(hpke.KEM.X25519, hpke.KDF.HKDF_SHA256, hpke.AEAD.AES_256_GCM)


class ShareReplayed(Exception):
    """The very same sealed share was already taken in this round (a replay, not a custodian)."""


class RoundChanged(Exception):
    """The round a share was sealed for is over (expired, completed or replaced)."""

    def __init__(self, round_id: str):
        super().__init__(f"the unseal round {round_id} is over (expired, completed or restarted); "
                         "seal the share again for the current round")


def _info(kind: str, *parts: str) -> bytes:
    return f"strongroom {kind} v1".encode() + b"\x00" + "\x00".join(parts).encode()


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


@dataclass
class Peer:
    """This instance's identity among keysvc instances; its private key never leaves memory."""

    signing_key: Ed25519PrivateKey
    peer_id: str = field(default_factory=lambda: new_id("kpeer_"))
    _private: X25519PrivateKey = field(default_factory=X25519PrivateKey.generate, repr=False)

    @property
    def public(self) -> bytes:
        return _raw(self._private.public_key())

    def signature(self) -> bytes:
        return self.signing_key.sign(_info("keysvc peer", self.peer_id) + b"\x00" + self.public)

    def trusts(self, doc: dict[str, Any]) -> bool:
        """A registration signed with our signing key (the same key file on every instance)."""
        verifier: Ed25519PublicKey = self.signing_key.public_key()
        try:
            verifier.verify(bytes(doc["signature"]), _info("keysvc peer", doc["peer_id"]) + b"\x00" + bytes(doc["public_key"]))
            return True
        except (InvalidSignature, KeyError, TypeError):
            return False

    def sign(self, sealed: bytes, info: bytes) -> bytes:
        """Vouch for something sealed to a peer, so a store writer without the key file cannot plant one."""
        return self.signing_key.sign(info + b"\x00" + sealed)

    def open(self, sealed: bytes, info: bytes, signature: bytes | None) -> bytes | None:
        """Open what another instance sealed to us, if an instance holding our signing key vouched for it."""
        try:
            self.signing_key.public_key().verify(bytes(signature or b""), info + b"\x00" + sealed)
            return SUITE.decrypt(sealed, self._private, info=info)
        except (InvalidSignature, InvalidTag, ValueError):
            return None

    def __repr__(self) -> str:
        return f"Peer(peer_id={self.peer_id})"


def _seal_to(doc: dict[str, Any], plaintext: bytes, info: bytes) -> bytes:
    return SUITE.encrypt(plaintext, X25519PublicKey.from_public_bytes(bytes(doc["public_key"])), info=info)


class Unsealing:
    """Registration, the shared unseal round, and root hand-off, for one instance."""

    def __init__(self, store: KeyStore, hierarchy: KeyHierarchy, peer: Peer, *, ttl: timedelta):
        self._store, self._hierarchy, self.peer, self._ttl = store, hierarchy, peer, ttl
        # The open round's transport key, once opened from our copy (forgotten when the round changes).
        self._transport: tuple[str, X25519PrivateKey] | None = None

    async def register(self) -> None:
        """Announce (or renew) this instance: public key, signature, expiry, sealed or not."""
        await self._store.register_peer(self.peer.peer_id, {
            "public_key": self.peer.public, "signature": self.peer.signature(),
            "expires_at": _now() + self._ttl, "sealed": self._hierarchy.sealed})

    async def withdraw(self) -> None:
        await self._store.withdraw_peer(self.peer.peer_id)

    async def _live_peers(self) -> list[dict[str, Any]]:
        docs = await self._store.live_peers(_now())
        return [d for d in docs if self.peer.trusts(d)]

    # --- the round ----------------------------------------------------------------------

    async def current_round(self, root_doc: dict[str, Any]) -> dict[str, Any] | None:
        """The round still open for this root, if any (a custodian seals a share to its id)."""
        doc = await self._store.unseal_round()
        return doc if rounds.is_open(doc, root_doc, now=_now()) else None

    async def open_round(self, root_doc: dict[str, Any]) -> dict[str, Any]:
        """The open round, or a new one (an expired or finished one is replaced) with a fresh transport key."""
        await self.register()
        doc = await self.current_round(root_doc)
        live = {p["peer_id"] for p in await self._live_peers()}
        if doc is not None and rounds.transport_held(doc, live):
            return doc
        # No running instance holds the round's transport key (they all stopped): nobody could open a
        # share sealed to it, so a fresh round replaces it.
        doc = await self._store.unseal_round()
        fresh = rounds.new_round(new_id("unr_"), root_doc["fingerprint"], now=_now())
        fresh["transport"] = await self._new_transport(fresh["round_id"])
        await self._store.open_unseal_round(fresh, replacing=None if doc is None else doc["round_id"])
        doc = await self._store.unseal_round()
        assert doc is not None
        return doc

    async def _new_transport(self, round_id: str) -> dict[str, Any]:
        """SECURITY: a fresh X25519 key for this round only; its private half exists only sealed to each
        running instance's in-memory key (and in their memory), and is shredded with the round, so a
        sealed share captured now opens in no later round and with no key file."""
        private = transit.new_transport_key()
        raw, public = transit.private_bytes(private), _raw(private.public_key())
        copies, signatures = {}, {}
        for p in await self._live_peers():
            info = _info("round transport", round_id, p["peer_id"])
            copies[p["peer_id"]] = _seal_to(p, raw, info)
            signatures[p["peer_id"]] = self.peer.sign(copies[p["peer_id"]], info)
        del raw, private
        return {"public_key": public, "copies": copies, "signatures": signatures}

    def transport_private(self, round_doc: dict[str, Any]) -> X25519PrivateKey | None:
        """This round's transport key, opened from our copy; None if this instance joined after the round opened."""
        if self._transport is not None and self._transport[0] == round_doc["round_id"]:
            return self._transport[1]
        self._transport = None
        transport = round_doc.get("transport") or {}
        sealed = transport.get("copies", {}).get(self.peer.peer_id)
        if sealed is None:
            return None
        raw = self.peer.open(bytes(sealed), _info("round transport", round_doc["round_id"], self.peer.peer_id),
                             transport.get("signatures", {}).get(self.peer.peer_id))
        if raw is None:
            return None
        private = X25519PrivateKey.from_private_bytes(raw)
        self._transport = (round_doc["round_id"], private)
        return private

    def forget_transport(self) -> None:
        self._transport = None

    def _mine(self, round_doc: dict[str, Any]) -> list[str]:
        """The shares of this round sealed to this instance (those it was alive for)."""
        shares = []
        for position, entry in enumerate(round_doc.get("entries", [])):
            sealed = entry.get("copies", {}).get(self.peer.peer_id)
            if sealed is None:
                continue
            opened = self.peer.open(bytes(sealed), _info("unseal share", round_doc["round_id"], self.peer.peer_id,
                                                         str(position)), entry.get("signatures", {}).get(self.peer.peer_id))
            if opened is not None:
                shares.append(opened.decode())
        return shares

    async def submit(self, share: str, root_doc: dict[str, Any], expected: tuple[str, ...], *, by: str,
                     round_id: str, sealed_digest: str) -> dict[str, Any]:
        """Check one custodian's share against the round it was sealed for, add it sealed to every live
        instance, and unseal this instance when it completes the threshold. Raises ShareError,
        RoundChanged or ShareReplayed, storing nothing."""
        await self.register()
        for _ in range(5):
            round_doc = await self.current_round(root_doc)
            if round_doc is None or round_doc["round_id"] != round_id:
                raise RoundChanged(round_id)
            if rounds.replayed(round_doc, sealed_digest):
                raise ShareReplayed("this sealed share was already submitted in this round; seal the share again")
            if rounds.submitted_by(round_doc, by):
                raise ShareReplayed("you already submitted a share in this round: each custodian submits only their own")
            unsealer = Unsealer(expected_fingerprint=expected)
            for held in self._mine(round_doc):
                unsealer.submit(held)
            before = unsealer.progress.submitted
            try:
                root = unsealer.submit(share)
            except ShareError:
                if before and unsealer.progress.submitted == 0:
                    await self._end_round()  # the threshold was reached but did not combine: start afresh
                raise
            if root is None and unsealer.progress.submitted == before:
                return {"sealed": True, "submitted": before, "needed": unsealer.progress.needed}  # already in
            position = len(round_doc["entries"])
            copies, signatures = {}, {}
            for p in await self._live_peers():
                info = _info("unseal share", round_doc["round_id"], p["peer_id"], str(position))
                copies[p["peer_id"]] = _seal_to(p, share.encode(), info)
                signatures[p["peer_id"]] = self.peer.sign(copies[p["peer_id"]], info)
            matched = await self._store.add_round_entry(
                round_doc["round_id"], position, {"by": by, "taken_by": self.peer.peer_id, "at": _now(), "copies": copies,
                                                  "signatures": signatures, "sealed_digest": sealed_digest})
            if not matched:
                continue  # another share came in at the same moment: check against it too
            if root is not None:
                self._unseal(root, root_doc)
                return {"sealed": False, "submitted": position + 1, "needed": position + 1}
            return {"sealed": True, "submitted": unsealer.progress.submitted, "needed": unsealer.progress.needed}
        raise ShareError("too many shares arrived at the same moment; submit this one again")

    def _unseal(self, root: bytes, root_doc: dict[str, Any]) -> None:
        self._transport = None
        self._hierarchy.unseal(root)
        self._hierarchy.follow_root_record(root_doc)
        log.info("custody_unsealed", root_fingerprint=self._hierarchy.root_fingerprint, peer_id=self.peer.peer_id)

    async def progress(self, threshold: int | None) -> dict[str, Any]:
        return {"submitted": rounds.submitted(await self._store.unseal_round(), now=_now()), "needed": threshold}

    # --- every tick, and on custody.unseal_progress --------------------------------------

    async def catch_up(self, root_doc: dict[str, Any] | None, expected: tuple[str, ...]) -> None:
        """Sealed: take a hand-off or this round's shares. Unsealed: hand the root to sealed peers."""
        if root_doc is None:
            return
        if self._hierarchy.sealed:
            if await self._take_handoff(root_doc, expected):
                return
            doc = await self._store.unseal_round()
            if not rounds.is_open(doc, root_doc, now=_now()):
                return
            unsealer = Unsealer(expected_fingerprint=expected)
            root = None
            try:
                for share in self._mine(doc):
                    root = unsealer.submit(share) or root
            except ShareError:
                return
            if root is not None:
                self._unseal(root, root_doc)
                await self.register()
            return
        await self._hand_off()

    async def _hand_off(self) -> None:
        fp = self._hierarchy.root_fingerprint
        assert fp is not None
        peers = await self._live_peers()
        if not any(d.get("sealed") for d in peers):
            await self._end_round()
        for doc in peers:
            if doc["peer_id"] == self.peer.peer_id or not doc.get("sealed") or doc.get("handoff_fp") == fp:
                continue
            info = _info("root handoff", doc["peer_id"], fp)
            sealed = _seal_to(doc, self._hierarchy.root_key(fp).get_secret_value(), info)
            await self._store.hand_root_to(doc["peer_id"], sealed, fp, self.peer.sign(sealed, info))

    async def _end_round(self) -> None:
        """Every live instance is unsealed: overwrite the round's sealed shares, then drop it."""
        await self._store.end_unseal_round()

    async def _take_handoff(self, root_doc: dict[str, Any], expected: tuple[str, ...]) -> bool:
        doc = await self._store.find_peer(self.peer.peer_id)
        if doc is None or doc.get("handoff") is None:
            return False
        root = self.peer.open(bytes(doc["handoff"]), _info("root handoff", self.peer.peer_id, doc.get("handoff_fp", "")),
                              doc.get("handoff_signature"))
        # Take it only if it is the root custody records: a forged hand-off gains nothing.
        await self._store.shred_handoff(self.peer.peer_id)
        if root is None or len(root) != 32 or fingerprint(root) not in expected:
            return False
        self._unseal(root, root_doc)
        await self.register()
        return True

