"""The pure volume logic: slot passphrases, the token's round trip and the rotation journal's steps."""

from __future__ import annotations

import json

import pytest

from agent import volumes as v
from agent.volumes import Step, VolumeStateError

GATEWAY = "https://gateway.test"
UUID = "0b6c1f5e-7a4d-4c3e-9f10-2a1b3c4d5e6f"


def test_slot_passphrase_is_per_key_and_per_volume():
    key = bytes(range(32))
    passphrase = v.slot_passphrase(key, UUID)
    assert passphrase == v.slot_passphrase(key, UUID.upper()) and len(passphrase) == 43 and passphrase.isascii()
    assert passphrase != v.slot_passphrase(key, UUID.replace("0b6c", "0b6d"))
    assert passphrase != v.slot_passphrase(bytes(32), UUID)
    assert key.hex().encode() not in passphrase


def test_recovery_passphrases_are_fresh_and_readable():
    first, second = v.recovery_passphrase(), v.recovery_passphrase()
    assert first != second and len(first.replace(b"-", b"")) == 52  # 256 bits in base32
    assert all(len(group) == 4 for group in first.split(b"-"))


def test_token_round_trip_and_journal_steps():
    token = v.VolumeToken(key_id="k", key_version=1, gateway_url=GATEWAY, volume_id="vol-1", keyslot=0)
    assert v.VolumeToken.from_json(json.loads(json.dumps(token.to_json()))) == token
    assert v.next_rotation_step(token, {0}, 1) is Step.DONE
    assert v.next_rotation_step(token, {0}, 2) is Step.BEGIN
    begun = v.begin(token, 2, 1)
    assert v.next_rotation_step(begun, {0}, None) is Step.ADD_SLOT
    assert v.next_rotation_step(begun, {0, 1}, None) is Step.COMMIT
    committed = v.commit(begun)
    assert (committed.keyslot, committed.key_version, committed.retire_keyslot) == (1, 2, 0)
    assert v.next_rotation_step(committed, {0, 1}, None) is Step.KILL_OLD
    assert v.next_rotation_step(committed, {1}, None) is Step.FORGET_OLD
    assert v.next_rotation_step(v.forget_old(committed), {1}, 2) is Step.DONE
    with pytest.raises(VolumeStateError):
        v.VolumeToken.from_json({"type": "strongroom", "keyslots": []})
