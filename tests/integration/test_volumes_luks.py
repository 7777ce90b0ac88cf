"""The volume layer over the real cryptsetup on LUKS2 file images, keys passed in (no server):
format and bind, unlock checks, refusals that leave the header as it was, keyslot rotation
crashed after every step and re-run, reencryption (recovery re-escrowed) and its resume after
kill -9."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import pytest

from agent import luks, volume_ops
from agent import volumes as v
from agent.client import KeyNotActive
from agent.luks import LuksError
from agent.volumes import Step, VolumeStateError

from .volume_world import GATEWAY, LocalKeys, LocalRegistry, header, image


def strongroom_passphrase(keys: LocalKeys, version: int, device: str) -> bytes:
    return v.slot_passphrase(keys.versions[version], luks.luks_uuid(device))


async def test_format_with_recovery_then_unlock_check(tmp_path):
    keys, registry = LocalKeys(), LocalRegistry()
    device = image(tmp_path / "vol.img")
    out = await volume_ops.format_volume(device, key_id=keys.key_id, keys=keys, registry=registry,
                                         gateway_url=GATEWAY, recovery=True)
    assert (out["keyslot"], out["recovery_keyslot"], out["key_version"]) == (1, 0, 1)
    metadata = luks.dump(device)
    assert luks.keyslots(metadata) == {0, 1}
    assert {s["kdf"]["type"] for s in metadata["keyslots"].values()} == {"pbkdf2"}
    assert metadata["segments"]["0"]["encryption"] == "aes-xts-plain64"
    token = v.find_token(metadata)[1]
    assert token == {"type": "strongroom", "keyslots": ["1"], "key_id": keys.key_id, "key_version": 1,
                     "gateway_url": GATEWAY, "volume_id": out["volume_id"], "kdf": v.KDF_NAME}
    assert registry.volumes[out["volume_id"]]["luks_uuid"] == luks.luks_uuid(device) == out["luks_uuid"]
    # The escrowed recovery passphrase opens slot 0, the derived one slot 1, and nothing else does.
    assert luks.opens(device, registry.escrowed[out["volume_id"]], 0)
    assert luks.opens(device, strongroom_passphrase(keys, 1, device), 1)
    assert not luks.opens(device, v.slot_passphrase(keys.versions[1], "another-uuid"))
    checked = await volume_ops.unlock_volume(device, keys=keys, check=True)
    assert checked["checked"] and checked["keyslot"] == 1
    assert keys.requests[-1] == (keys.key_id, 1, {"volume_id": out["volume_id"], "luks_uuid": out["luks_uuid"]})
    with pytest.raises(VolumeStateError):  # format never silently destroys a volume
        await volume_ops.format_volume(device, key_id=keys.key_id, keys=keys, registry=registry, gateway_url=GATEWAY)


async def test_bind_and_refusals_leave_the_header_unchanged(tmp_path):
    keys, registry = LocalKeys(), LocalRegistry()
    device = image(tmp_path / "vol.img")
    luks.run(["luksFormat", "--type", "luks2", "--batch-mode", *luks.FAST_PBKDF, "--key-file", "{k}", device],
             secrets={"k": b"correct horse"})
    before = header(device)
    with pytest.raises(LuksError) as wrong:
        await volume_ops.bind_volume(device, key_id=keys.key_id, existing=b"wrong horse", keys=keys,
                                     registry=registry, gateway_url=GATEWAY)
    assert wrong.value.kind == LuksError.BAD_PASSPHRASE and header(device) == before and not keys.requests
    with pytest.raises(VolumeStateError):
        await volume_ops.unlock_volume(device, keys=keys, check=True)
    assert header(device) == before

    # A bind that died after adding its slot (7) and before writing the token: the re-run reuses it.
    luks.add_key(device, existing=b"correct horse", new=strongroom_passphrase(keys, 1, device), keyslot=7)
    out = await volume_ops.bind_volume(device, key_id=keys.key_id, existing=b"correct horse", keys=keys,
                                       registry=registry, gateway_url=GATEWAY)
    assert out["keyslot"] == 7 and luks.keyslots(luks.dump(device)) == {0, 7}
    assert (await volume_ops.unlock_volume(device, keys=keys, check=True))["keyslot"] == 7
    bound = header(device)
    with pytest.raises(VolumeStateError):
        await volume_ops.bind_volume(device, key_id=keys.key_id, existing=b"correct horse", keys=keys,
                                     registry=registry, gateway_url=GATEWAY)
    assert header(device) == bound

    # Key version 1 destroyed on the "server": the token's version no longer opens the slot.
    keys.versions[1] = os.urandom(32)
    with pytest.raises(LuksError) as stale:
        await volume_ops.unlock_volume(device, keys=keys, check=True)
    assert stale.value.kind == LuksError.BAD_PASSPHRASE and header(device) == bound

    with pytest.raises(LuksError) as missing:
        await volume_ops.unlock_volume(str(tmp_path / "nope.img"), keys=keys, check=True)
    assert missing.value.kind == LuksError.NO_DEVICE
    plain = image(tmp_path / "plain.img", "1M")
    luks1 = image(tmp_path / "luks1.img", "4M")
    luks.run(["luksFormat", "--type", "luks1", "--batch-mode", "--iter-time", "1", "--key-file", "{k}", luks1],
             secrets={"k": b"x"})
    for device in (plain, luks1):
        with pytest.raises(LuksError) as not_luks2:
            await volume_ops.bind_volume(device, key_id=keys.key_id, existing=b"x", keys=keys, registry=registry,
                                         gateway_url=GATEWAY)
        assert not_luks2.value.kind == LuksError.NOT_LUKS2


class Crash(BaseException):
    """Stands for the process dying between two cryptsetup commands (each one is atomic)."""


ROTATION_STEPS = [Step.BEGIN, Step.ADD_SLOT, Step.COMMIT, Step.KILL_OLD, Step.FORGET_OLD]


@pytest.mark.parametrize("crash_after", ROTATION_STEPS, ids=lambda s: s.value)
async def test_rotation_crashed_after_each_step_leaves_a_working_slot_and_a_rerun_finishes(tmp_path, crash_after):
    keys, registry = LocalKeys(), LocalRegistry()
    device = image(tmp_path / "vol.img")
    out = await volume_ops.format_volume(device, key_id=keys.key_id, keys=keys, registry=registry,
                                         gateway_url=GATEWAY, recovery=True)
    recovery = registry.escrowed[out["volume_id"]]
    keys.rotate()
    seen: list[Step] = []

    def crash(step: Step) -> None:
        seen.append(step)
        if step is crash_after:
            raise Crash

    with pytest.raises(Crash):
        await volume_ops.rotate_volume(device, keys=keys, on_step=crash)
    assert seen == ROTATION_STEPS[: ROTATION_STEPS.index(crash_after) + 1]
    # Whatever step it died after, the token names a slot its key version opens.
    token = v.VolumeToken.from_json(v.find_token(luks.dump(device))[1])
    assert luks.opens(device, strongroom_passphrase(keys, token.key_version, device), token.keyslot)
    assert (await volume_ops.unlock_volume(device, keys=keys, check=True))["checked"]

    done = await volume_ops.rotate_volume(device, keys=keys)
    metadata = luks.dump(device)
    token = v.VolumeToken.from_json(v.find_token(metadata)[1])
    assert (token.key_version, token.rotation, token.retire_keyslot) == (2, None, None) and done["key_version"] == 2
    assert luks.keyslots(metadata) == {0, token.keyslot}
    assert luks.opens(device, strongroom_passphrase(keys, 2, device), token.keyslot)
    assert not luks.opens(device, strongroom_passphrase(keys, 1, device))
    assert luks.opens(device, recovery, 0)
    again = await volume_ops.rotate_volume(device, keys=keys)
    assert not again["rotated"] and luks.dump(device) == metadata


async def test_rotation_refused_for_the_old_version_leaves_the_header_unchanged(tmp_path):
    keys, registry = LocalKeys(), LocalRegistry()
    device = image(tmp_path / "vol.img")
    await volume_ops.format_volume(device, key_id=keys.key_id, keys=keys, registry=registry, gateway_url=GATEWAY)
    keys.rotate()
    keys.inactive.add(1)  # the latest is released, the version the slot opens with is not
    before = header(device)
    with pytest.raises(KeyNotActive):
        await volume_ops.rotate_volume(device, keys=keys)
    assert header(device) == before and [r[1] for r in keys.requests[-2:]] == [None, 1]


async def test_reencrypt_keeps_the_strongroom_slot_and_re_escrows_recovery(tmp_path):
    keys, registry = LocalKeys(), LocalRegistry()
    device = image(tmp_path / "vol.img")
    out = await volume_ops.format_volume(device, key_id=keys.key_id, keys=keys, registry=registry,
                                         gateway_url=GATEWAY, recovery=True)
    old_recovery = registry.escrowed[out["volume_id"]]
    old_digest = luks.dump(device)["digests"]
    records: list[dict] = []
    done = await volume_ops.reencrypt_volume(device, keys=keys, registry=registry, progress=records.append)
    metadata = luks.dump(device)
    assert metadata["digests"] != old_digest and not luks.reencrypt_interrupted(metadata)
    assert records and records[-1]["device_bytes"] == records[-1]["device_size"]
    token = v.VolumeToken.from_json(v.find_token(metadata)[1])
    assert done["recovery_reescrowed"] and not token.reencrypt_recovery
    new_recovery = registry.escrowed[out["volume_id"]]
    assert new_recovery != old_recovery
    assert luks.opens(device, new_recovery, done["recovery_keyslot"])
    assert not luks.opens(device, old_recovery)
    assert luks.opens(device, strongroom_passphrase(keys, 1, device), token.keyslot)
    assert v.recovery_keyslot(metadata) == done["recovery_keyslot"]


_REENCRYPT_CHILD = """
import asyncio, sys
from agent import volume_ops
from tests.integration.volume_world import LocalKeys, LocalRegistry
keys = LocalKeys()
keys.versions[1] = sys.stdin.buffer.read()
asyncio.run(volume_ops.reencrypt_volume(sys.argv[1], keys=keys, registry=LocalRegistry(), resilience="journal",
                                        hotzone_size="64k"))
"""


async def test_reencrypt_killed_mid_way_resumes(tmp_path):
    keys, registry = LocalKeys(), LocalRegistry()
    device = image(tmp_path / "vol.img")
    out = await volume_ops.format_volume(device, key_id=keys.key_id, keys=keys, registry=registry,
                                         gateway_url=GATEWAY, recovery=True)
    old_recovery = registry.escrowed[out["volume_id"]]
    passphrase = strongroom_passphrase(keys, 1, device)
    plaintext = xts_write_pattern(device, passphrase)
    # Kill -9 the agent's reencrypting process group (Python and cryptsetup) as soon as the header says reencryption is under way;
    # if a run finishes first (it is fast), start another one: every run gives a new volume key.
    interrupted = False
    for _ in range(10):
        child = subprocess.Popen([sys.executable, "-c", _REENCRYPT_CHILD, device], stdin=subprocess.PIPE,
                                 start_new_session=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        child.stdin.write(keys.versions[1])
        child.stdin.close()
        while child.poll() is None:
            try:
                interrupted = luks.reencrypt_interrupted(luks.dump(device))
            except LuksError:
                interrupted = False  # a header being written: look again
            if interrupted:
                os.killpg(child.pid, signal.SIGKILL)
                break
            await asyncio.sleep(0.005)
        child.wait()
        if interrupted and luks.reencrypt_interrupted(luks.dump(device)):
            break
    assert interrupted, "no run was caught mid-way"
    with pytest.raises(VolumeStateError):  # unlocking a half re-encrypted volume is refused with a hint
        await volume_ops.unlock_volume(device, keys=keys, check=True)
    done = await volume_ops.reencrypt_volume(device, keys=keys, registry=registry)
    assert done["resumed"] and not luks.reencrypt_interrupted(luks.dump(device))
    # The journal said a recovery slot was owed: a new passphrase was escrowed and opens its slot.
    assert done["recovery_reescrowed"] and registry.escrowed[out["volume_id"]] != old_recovery
    assert luks.opens(device, registry.escrowed[out["volume_id"]], done["recovery_keyslot"])
    assert (await volume_ops.unlock_volume(device, keys=keys, check=True))["checked"]
    assert xts_read(device, passphrase, len(plaintext)) == plaintext


def _volume_key(device: str, passphrase: bytes) -> bytes:
    out = luks.run(["luksDump", "--dump-volume-key", "--batch-mode", "--key-file", "{k}", device],
                   secrets={"k": passphrase}).stdout
    lines = out.split("MK dump:", 1)[1].strip().splitlines()
    return bytes.fromhex("".join(line.strip().replace(" ", "") for line in lines if ":" not in line))


def _segment(device: str) -> tuple[int, int]:
    segment = luks.dump(device)["segments"]["0"]
    return int(segment["offset"]), int(segment["sector_size"])


def _xts(device: str, passphrase: bytes, data: bytes, encrypt: bool) -> bytes:
    """dm-crypt's aes-xts-plain64 over the first sectors: tweak = 512-byte sector number, little-endian."""
    from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

    key = _volume_key(device, passphrase)
    _, sector = _segment(device)
    out = bytearray()
    for i in range(0, len(data), sector):
        tweak = (i // 512).to_bytes(16, "little")
        cipher = Cipher(algorithms.AES(key), modes.XTS(tweak))
        op = cipher.encryptor() if encrypt else cipher.decryptor()
        out += op.update(data[i:i + sector]) + op.finalize()
    return bytes(out)


def xts_write_pattern(device: str, passphrase: bytes) -> bytes:
    """Put known plaintext in the volume as dm-crypt would have written it."""
    plaintext = b"".join(f"sector {i:06d} ".encode() * 256 for i in range(64))[: 64 * 4096]
    offset, _ = _segment(device)
    with open(device, "r+b") as f:
        f.seek(offset)
        f.write(_xts(device, passphrase, plaintext, encrypt=True))
    return plaintext


def xts_read(device: str, passphrase: bytes, length: int) -> bytes:
    offset, _ = _segment(device)
    with open(device, "rb") as f:
        f.seek(offset)
        return _xts(device, passphrase, f.read(length), encrypt=False)
