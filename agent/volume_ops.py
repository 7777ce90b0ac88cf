"""Volume operations: format, bind, unlock, rotate, reencrypt, erase and status of a LUKS2 volume
whose Strongroom keyslot opens with a passphrase derived from a released data key.

The key and the volume registry come in as arguments (`KeySource`, `VolumeRegistry`): the CLI
passes the gateway client; tests pass keys directly. Every key release and registration comes
before the first header write, so a refusal leaves the header as it was (reencryption escrows its
new recovery passphrase after the data is done, and a re-run finishes that). cryptsetup runs in a
worker thread.
"""

from __future__ import annotations

import asyncio
import uuid as uuid_module
from collections.abc import Callable, Mapping
from dataclasses import replace
from typing import Any, Protocol

from agent import luks
from agent import volumes as v
from agent.client import ReleasedKey
from agent.luks import LuksError
from agent.volumes import Step, VolumeStateError, VolumeToken


class KeySource(Protocol):
    """Releases data key `key_id` (the latest version if `key_version` is None) for `volume`."""

    async def __call__(self, key_id: str, key_version: int | None,
                      volume: Mapping[str, str] | None) -> ReleasedKey: ...


class VolumeRegistry(Protocol):
    """The server's record of volumes and the recovery passphrases escrowed for them."""

    async def register(self, *, key_id: str, key_version: int, luks_uuid: str, device: str,
                       volume_id: str | None = None) -> dict[str, Any]: ...

    async def escrow(self, *, volume_id: str, passphrase: bytes) -> None: ...


def _thread(func: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    return asyncio.to_thread(func, *args, **kwargs)


def volume_context(token: VolumeToken, luks_uuid: str) -> dict[str, str] | None:
    """What a key request for this volume tells the server about it (nothing if it was never registered)."""
    return {"volume_id": token.volume_id, "luks_uuid": luks_uuid} if token.volume_id else None


async def load_token(device: str) -> tuple[dict[str, Any], int, VolumeToken, str]:
    """(metadata, token id, token, LUKS UUID) of a bound LUKS2 volume."""
    await _thread(luks.require_luks2, device)
    metadata = await _thread(luks.dump, device)
    found = v.find_token(metadata)
    if found is None:
        raise VolumeStateError(f"{device} has no strongroom token: bind it first (volume bind)")
    return metadata, found[0], VolumeToken.from_json(found[1]), await _thread(luks.luks_uuid, device)


async def format_volume(device: str, *, key_id: str, keys: KeySource, registry: VolumeRegistry, gateway_url: str,
                        recovery: bool = False, force: bool = False) -> dict[str, Any]:
    """A new LUKS2 volume whose Strongroom slot opens with the latest version of `key_id`; with
    `recovery`, a generated recovery passphrase, escrowed first, holds slot 0."""
    await _thread(luks.require_exists, device)
    if not force and await _thread(luks.is_luks, device):
        raise VolumeStateError(f"{device} already holds a LUKS volume: use volume bind, or --force to destroy it")
    luks_uuid = str(uuid_module.uuid4())
    released = await keys(key_id, None, None)
    record = await registry.register(key_id=key_id, key_version=released.key_version, luks_uuid=luks_uuid,
                                     device=device)
    volume_id = str(record["volume_id"])
    passphrase = v.slot_passphrase(released.key, luks_uuid)
    slot = 0
    recovery_secret = v.recovery_passphrase() if recovery else None
    if recovery_secret is not None:
        await registry.escrow(volume_id=volume_id, passphrase=recovery_secret)
        slot = 1
        await _thread(luks.format_volume, device, uuid=luks_uuid, passphrase=recovery_secret, keyslot=0)
        await _thread(luks.add_key, device, existing=recovery_secret, new=passphrase, keyslot=slot, existing_slot=0)
    else:
        await _thread(luks.format_volume, device, uuid=luks_uuid, passphrase=passphrase, keyslot=slot)
    token = VolumeToken(key_id=key_id, key_version=released.key_version, gateway_url=gateway_url,
                        volume_id=volume_id, keyslot=slot)
    await _thread(luks.import_token, device, 0, token.to_json())
    if recovery_secret is not None:
        await _thread(luks.import_token, device, 1, v.recovery_token(0, volume_id))
    return {"device": device, "luks_uuid": luks_uuid, "volume_id": volume_id, "key_id": key_id,
            "key_version": released.key_version, "keyslot": slot, "recovery_keyslot": 0 if recovery else None}


async def bind_volume(device: str, *, key_id: str, existing: bytes, keys: KeySource, registry: VolumeRegistry,
                      gateway_url: str) -> dict[str, Any]:
    """Add a Strongroom slot to an existing LUKS2 volume, proving access with an existing passphrase."""
    await _thread(luks.require_luks2, device)
    metadata = await _thread(luks.dump, device)
    if v.find_token(metadata) is not None:
        raise VolumeStateError(f"{device} is already bound to Strongroom: use volume rotate or volume status")
    if await _thread(luks.reencrypt_interrupted, metadata):
        raise VolumeStateError(f"{device} has an interrupted reencryption: finish it with cryptsetup first")
    if not await _thread(luks.opens, device, existing):
        raise LuksError(LuksError.BAD_PASSPHRASE, f"{device}: the given passphrase opens no keyslot")
    luks_uuid = await _thread(luks.luks_uuid, device)
    released = await keys(key_id, None, None)
    record = await registry.register(key_id=key_id, key_version=released.key_version, luks_uuid=luks_uuid,
                                     device=device)
    passphrase = v.slot_passphrase(released.key, luks_uuid)
    # A bind that died after adding its slot but before writing the token: that slot is reused.
    slot = await _slot_opened_by(device, metadata, passphrase)
    if slot is None:
        slot = luks.free_keyslot(metadata)
        await _thread(luks.add_key, device, existing=existing, new=passphrase, keyslot=slot)
    token = VolumeToken(key_id=key_id, key_version=released.key_version, gateway_url=gateway_url,
                        volume_id=str(record["volume_id"]), keyslot=slot)
    await _thread(luks.import_token, device, v.free_token_id(metadata), token.to_json())
    return {"device": device, "luks_uuid": luks_uuid, "volume_id": token.volume_id, "key_id": key_id,
            "key_version": released.key_version, "keyslot": slot}


async def _slot_opened_by(device: str, metadata: Mapping[str, Any], passphrase: bytes) -> int | None:
    if not await _thread(luks.opens, device, passphrase):
        return None
    for slot in sorted(luks.keyslots(metadata)):
        if await _thread(luks.opens, device, passphrase, slot):
            return slot
    return None


async def unlock_volume(device: str, *, keys: KeySource, name: str | None = None,
                        check: bool = False) -> dict[str, Any]:
    """Open the volume (as /dev/mapper/NAME) with the key version its token names; with `check`,
    only prove that the Strongroom slot opens (``--test-passphrase``)."""
    metadata, _, token, luks_uuid = await load_token(device)
    if luks.reencrypt_interrupted(metadata):
        raise VolumeStateError(f"{device} has an interrupted reencryption: run volume reencrypt to finish it")
    released = await keys(token.key_id, token.key_version, volume_context(token, luks_uuid))
    passphrase = v.slot_passphrase(released.key, luks_uuid)
    if not await _thread(luks.opens, device, passphrase, token.keyslot):
        raise LuksError(LuksError.BAD_PASSPHRASE,
                        f"{device}: key {token.key_id} version {token.key_version} does not open slot {token.keyslot}")
    mapped = None
    if not check:
        mapped = name or f"strongroom-{luks_uuid}"
        await _thread(luks.open_volume, device, mapped, passphrase, token.keyslot)
    return {"device": device, "keyslot": token.keyslot, "key_id": token.key_id, "key_version": token.key_version,
            "checked": check, "mapped": f"/dev/mapper/{mapped}" if mapped else None}


async def rotate_volume(device: str, *, keys: KeySource,
                        on_step: Callable[[Step], None] | None = None) -> dict[str, Any]:
    """Move the Strongroom slot to the key's latest version: record the target in the token, add the
    new slot, test it, point the token at it, kill the old slot. A re-run after a crash at any
    point carries on from what the token records; the token always names a slot that opens."""
    metadata, token_id, token, luks_uuid = await load_token(device)
    if luks.reencrypt_interrupted(metadata):
        raise VolumeStateError(f"{device} has an interrupted reencryption: run volume reencrypt to finish it")
    context = volume_context(token, luks_uuid)
    released: dict[int, ReleasedKey] = {}

    async def passphrase(version: int | None) -> bytes:
        key = released.get(version) if version is not None else None
        if key is None:
            key = await keys(token.key_id, version, context)
            released[key.key_version] = key
        return v.slot_passphrase(key.key, luks_uuid)

    from_version = token.key_version
    latest: int | None = None
    if v.next_rotation_step(token, luks.keyslots(metadata), None) is Step.DONE:
        await passphrase(None)  # the latest version, released (and audited) like any other
        latest = max(released)
    # Every key the remaining steps need is released before the first header write, so a refusal
    # (denied, pending, unreachable, version no longer active) leaves the header as it was.
    if v.next_rotation_step(token, luks.keyslots(metadata), latest) is not Step.DONE:
        await passphrase(token.key_version)
        if token.rotation is not None:
            await passphrase(token.rotation.key_version)
    recovery_slot = v.recovery_keyslot(metadata)
    while (step := v.next_rotation_step(token, luks.keyslots(metadata), latest)) is not Step.DONE:
        if step is Step.BEGIN:
            assert latest is not None
            token = v.begin(token, latest, luks.free_keyslot(metadata))
        elif step is Step.ADD_SLOT:
            assert token.rotation is not None
            await _thread(luks.add_key, device, existing=await passphrase(token.key_version),
                          new=await passphrase(token.rotation.key_version), keyslot=token.rotation.keyslot,
                          existing_slot=token.keyslot)
        elif step is Step.COMMIT:
            assert token.rotation is not None
            new = await passphrase(token.rotation.key_version)
            if await _thread(luks.opens, device, new, token.rotation.keyslot):
                token = v.commit(token)
            else:  # that slot was taken by someone else meanwhile: never touch it, use another
                token = v.move_rotation(token, luks.free_keyslot(metadata))
        elif step is Step.KILL_OLD:
            assert token.retire_keyslot is not None
            if token.retire_keyslot in (token.keyslot, recovery_slot):
                token = v.forget_old(token)  # never wipe the live or the recovery slot
            else:
                await _thread(luks.kill_slot, device, token.retire_keyslot, await passphrase(token.key_version))
        elif step is Step.FORGET_OLD:
            token = v.forget_old(token)
        if step in (Step.BEGIN, Step.COMMIT, Step.FORGET_OLD) or (step is Step.KILL_OLD and token.retire_keyslot
                                                                 is None):
            await _thread(luks.import_token, device, token_id, token.to_json())
        if on_step is not None:
            on_step(step)
        metadata = await _thread(luks.dump, device)
    return {"device": device, "key_id": token.key_id, "from_version": from_version,
            "key_version": token.key_version, "keyslot": token.keyslot, "rotated": token.key_version != from_version}


async def reencrypt_volume(device: str, *, keys: KeySource, registry: VolumeRegistry, resilience: str = "checksum",
                           hotzone_size: str | None = None,
                           progress: Callable[[dict[str, Any]], None] | None = None) -> dict[str, Any]:
    """A new volume key, the data re-encrypted in place (or an interrupted run resumed).

    cryptsetup keeps only the slot whose passphrase it is given: the Strongroom slot. A recovery
    slot is dropped with the old volume key, so a new recovery passphrase is generated, escrowed
    and added afterwards; the token records that this is owed, so a re-run finishes it."""
    metadata, token_id, token, luks_uuid = await load_token(device)
    if token.rotation is not None or token.retire_keyslot is not None:
        raise VolumeStateError(f"{device} has an unfinished keyslot rotation: run volume rotate first")
    released = await keys(token.key_id, token.key_version, volume_context(token, luks_uuid))
    passphrase = v.slot_passphrase(released.key, luks_uuid)
    resumed = luks.reencrypt_interrupted(metadata)
    if not resumed:
        if not await _thread(luks.opens, device, passphrase, token.keyslot):
            raise LuksError(LuksError.BAD_PASSPHRASE, f"{device}: the released key does not open slot {token.keyslot}")
        if v.recovery_keyslot(metadata) is not None and not token.reencrypt_recovery:
            token = replace(token, reencrypt_recovery=True)
            await _thread(luks.import_token, device, token_id, token.to_json())
    # Skipped only when a finished reencryption still owes its recovery slot (a re-run after that).
    reencrypted = resumed or not token.reencrypt_recovery or v.recovery_keyslot(metadata) is not None
    if reencrypted:
        await _thread(luks.reencrypt, device, passphrase, keyslot=token.keyslot, resume=resumed,
                      resilience=resilience, hotzone_size=hotzone_size, progress=progress)
    metadata = await _thread(luks.dump, device)
    found = v.find_token(metadata)
    assert found is not None
    token_id, token = found[0], VolumeToken.from_json(found[1])  # cryptsetup may have renumbered the slot
    recovery_slot = None
    if token.reencrypt_recovery:
        secret = v.recovery_passphrase()
        if token.volume_id is None:
            raise VolumeStateError(f"{device}: the token names no volume id to escrow a recovery passphrase for")
        await registry.escrow(volume_id=token.volume_id, passphrase=secret)
        recovery_slot = luks.free_keyslot(metadata)
        await _thread(luks.add_key, device, existing=passphrase, new=secret, keyslot=recovery_slot,
                      existing_slot=token.keyslot)
        found_recovery = v.find_token(metadata, v.RECOVERY_TOKEN_TYPE)
        recovery_id = found_recovery[0] if found_recovery else v.free_token_id(metadata)
        await _thread(luks.import_token, device, recovery_id, v.recovery_token(recovery_slot, token.volume_id))
        token = replace(token, reencrypt_recovery=False)
        await _thread(luks.import_token, device, token_id, token.to_json())
    return {"device": device, "resumed": resumed, "reencrypted": reencrypted, "keyslot": token.keyslot,
            "key_version": token.key_version,
            "recovery_keyslot": recovery_slot, "recovery_reescrowed": recovery_slot is not None}


def dropped_by_reencrypt(metadata: Mapping[str, Any], token: VolumeToken) -> list[int]:
    """Keyslots a reencryption drops for good: all but the Strongroom and the recovery slot."""
    kept = {token.keyslot, v.recovery_keyslot(metadata)}
    return sorted(slot for slot in luks.keyslots(metadata) if slot not in kept)


async def erase_volume(device: str) -> dict[str, Any]:
    """Wipe every keyslot: nobody, Strongroom included, can open the volume again."""
    await _thread(luks.require_luks2, device)
    await _thread(luks.erase, device)
    return {"device": device, "erased": True}


def describe(metadata: Mapping[str, Any], luks_uuid: str, device: str) -> dict[str, Any]:
    """The local state of a volume: its slots (and what each is for), its token and journal."""
    found = v.find_token(metadata)
    token = VolumeToken.from_json(found[1]) if found else None
    recovery = v.recovery_keyslot(metadata)
    slots = []
    for slot in sorted(luks.keyslots(metadata)):
        kdf = metadata["keyslots"][str(slot)].get("kdf", {})
        role = ("strongroom" if token and slot == token.keyslot else "recovery" if slot == recovery
                else "strongroom-rotation" if token and token.rotation and slot == token.rotation.keyslot
                else "strongroom-retiring" if token and slot == token.retire_keyslot else "other")
        slots.append({"keyslot": slot, "role": role, "kdf": kdf.get("type")})
    return {
        "device": device, "luks_uuid": luks_uuid, "keyslots": slots,
        "token": found[1] if found else None,
        "key_id": token.key_id if token else None, "key_version": token.key_version if token else None,
        "volume_id": token.volume_id if token else None,
        "rotation_in_progress": bool(token and (token.rotation or token.retire_keyslot is not None)),
        "reencryption_interrupted": luks.reencrypt_interrupted(metadata),
        "requirements": luks.requirements(metadata),
    }
