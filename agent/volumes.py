"""Volumes, the pure part: slot passphrases derived from released data keys, the LUKS2 tokens that
record them, and the rotation state machine whose journal is the token itself.

A Strongroom keyslot's passphrase is HKDF-SHA256 over the data key with the volume's LUKS UUID in
the info, so one data key gives every volume its own passphrase and a passphrase says nothing of
the key. The ``strongroom`` token (type, keyslots, key id and version, gateway, volume id) is what
unlock reads; while a rotation runs it also holds the step reached, so a re-run after a crash
finishes it (every header write is atomic, and the token always names a slot that opens).
No I/O here.
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import Enum
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

TOKEN_TYPE = "strongroom"
RECOVERY_TOKEN_TYPE = "strongroom-recovery"
SLOT_INFO_PREFIX = b"strongroom/luks-keyslot/v1/"
SLOT_SECRET_BYTES = 32
RECOVERY_BYTES = 32
KDF_NAME = "hkdf-sha256/luks-keyslot/v1"


class VolumeStateError(Exception):
    """The volume's header is not in a state that allows the operation (not bound, already bound…)."""


def slot_passphrase(data_key: bytes, luks_uuid: str) -> bytes:
    """The keyslot passphrase for this volume: base64url(HKDF-SHA256(data key, info=prefix‖UUID))."""
    derived = HKDF(algorithm=hashes.SHA256(), length=SLOT_SECRET_BYTES, salt=None,
                   info=SLOT_INFO_PREFIX + luks_uuid.lower().encode("ascii")).derive(data_key)
    return base64.urlsafe_b64encode(derived).rstrip(b"=")


def recovery_passphrase() -> bytes:
    """A fresh 256-bit recovery passphrase, base32 in dash-separated groups of 4 to read aloud."""
    text = base64.b32encode(secrets.token_bytes(RECOVERY_BYTES)).decode("ascii").rstrip("=")
    return "-".join(text[i:i + 4] for i in range(0, len(text), 4)).encode("ascii")


@dataclass(frozen=True)
class Rotation:
    """A keyslot rotation under way: the version being moved to and the slot it goes in."""

    key_version: int
    keyslot: int


@dataclass(frozen=True)
class VolumeToken:
    """What the ``strongroom`` LUKS2 token records. `keyslot` always opens with `key_version`."""

    key_id: str
    key_version: int
    gateway_url: str
    volume_id: str | None
    keyslot: int
    rotation: Rotation | None = None   # journal: a new slot is being added
    retire_keyslot: int | None = None  # journal: the old slot still to be killed
    reencrypt_recovery: bool = False   # journal: a recovery slot must be re-added after reencryption

    def to_json(self) -> dict[str, Any]:
        document: dict[str, Any] = {
            "type": TOKEN_TYPE, "keyslots": [str(self.keyslot)], "key_id": self.key_id,
            "key_version": self.key_version, "gateway_url": self.gateway_url, "volume_id": self.volume_id,
            "kdf": KDF_NAME,
        }
        if self.rotation is not None:
            document["rotation"] = {"key_version": self.rotation.key_version, "keyslot": self.rotation.keyslot}
        if self.retire_keyslot is not None:
            document["retire_keyslot"] = self.retire_keyslot
        if self.reencrypt_recovery:
            document["reencrypt_recovery"] = True
        return document

    @classmethod
    def from_json(cls, document: Mapping[str, Any]) -> VolumeToken:
        try:
            slots = document["keyslots"]
            # Mid-reencryption cryptsetup lists the slot for the old and the new volume key.
            if document.get("type") != TOKEN_TYPE:
                raise ValueError("not a strongroom token")
            if not slots:
                raise VolumeStateError("the strongroom token names no keyslot: the volume was erased or its slot killed")
            rotation = document.get("rotation")
            return cls(
                key_id=str(document["key_id"]), key_version=_int(document["key_version"]),
                gateway_url=str(document["gateway_url"]), volume_id=document.get("volume_id"),
                keyslot=min(int(slot) for slot in slots),
                rotation=Rotation(_int(rotation["key_version"]), _int(rotation["keyslot"])) if rotation else None,
                retire_keyslot=_int(document["retire_keyslot"]) if "retire_keyslot" in document else None,
                reencrypt_recovery=bool(document.get("reencrypt_recovery", False)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise VolumeStateError(f"the strongroom token is malformed ({exc})") from None


def _int(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, str)):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


def find_token(metadata: Mapping[str, Any], token_type: str = TOKEN_TYPE) -> tuple[int, dict[str, Any]] | None:
    """The (id, document) of the header's first token of `token_type`."""
    for token_id, document in sorted(metadata.get("tokens", {}).items(), key=lambda item: int(item[0])):
        if document.get("type") == token_type:
            return int(token_id), document
    return None


def free_token_id(metadata: Mapping[str, Any]) -> int:
    used = {int(token_id) for token_id in metadata.get("tokens", {})}
    return next(i for i in range(32) if i not in used)


def recovery_token(keyslot: int, volume_id: str | None) -> dict[str, Any]:
    return {"type": RECOVERY_TOKEN_TYPE, "keyslots": [str(keyslot)], "volume_id": volume_id, "escrowed": True}


def recovery_keyslot(metadata: Mapping[str, Any]) -> int | None:
    found = find_token(metadata, RECOVERY_TOKEN_TYPE)
    if found is None or not found[1].get("keyslots"):
        return None
    return int(found[1]["keyslots"][0])


class Step(Enum):
    """The next thing a keyslot rotation does, decided from the token and the slots present."""

    DONE = "done"              # at the target version, nothing in the journal
    BEGIN = "begin"            # record the target version and a free slot in the token
    ADD_SLOT = "add_slot"      # add the new version's passphrase in the recorded slot
    COMMIT = "commit"          # the new slot opens: point the token at it, mark the old one to retire
    KILL_OLD = "kill_old"      # wipe the old slot
    FORGET_OLD = "forget_old"  # the old slot is gone: clear it from the journal


def next_rotation_step(token: VolumeToken, slots: set[int], latest_version: int | None) -> Step:
    """Where a rotation stands. `latest_version` is the target when none is under way (None: no rotation
    wanted beyond finishing the journal)."""
    if token.retire_keyslot is not None:
        return Step.KILL_OLD if token.retire_keyslot in slots else Step.FORGET_OLD
    if token.rotation is not None:
        return Step.COMMIT if token.rotation.keyslot in slots else Step.ADD_SLOT
    if latest_version is not None and latest_version > token.key_version:
        return Step.BEGIN
    return Step.DONE


def begin(token: VolumeToken, target_version: int, free_slot: int) -> VolumeToken:
    return replace(token, rotation=Rotation(target_version, free_slot))


def move_rotation(token: VolumeToken, free_slot: int) -> VolumeToken:
    """The recorded slot holds something that is not ours: go on in another free slot."""
    assert token.rotation is not None
    return replace(token, rotation=Rotation(token.rotation.key_version, free_slot))


def commit(token: VolumeToken) -> VolumeToken:
    assert token.rotation is not None
    return replace(token, key_version=token.rotation.key_version, keyslot=token.rotation.keyslot,
                   rotation=None, retire_keyslot=token.keyslot)


def forget_old(token: VolumeToken) -> VolumeToken:
    return replace(token, retire_keyslot=None)
