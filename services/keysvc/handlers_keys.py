"""keysvc's key lifecycle operations: create, read, list, change state, rotate (by hand and when
due), retire old versions. Each loads the key, decides in keys.py, saves by compare-and-swap with
its event staged in the same write, then publishes."""

from __future__ import annotations

from shared import commands, events, rpc
from shared.commands_custody import SetMinDecryptionVersionCall
from shared.outbox import Outbox
from shared.store import DuplicateKeyError

from . import keys as domain
from .cache import KeyCache
from .clock import now as _now
from .handlers_common import event_fields, existing, made_by, save, sealed, tenant_settings, unprocessable
from .hierarchy import KeyHierarchy, Sealed
from .key_docs import public_view
from .store import KeyStore


def _view(key: domain.Key) -> commands.KeyView:
    return commands.KeyView.model_validate(public_view(key))


async def create_key(
    request: rpc.RpcRequest, cmd: commands.CreateKey, *, store: KeyStore, hierarchy: KeyHierarchy,
    cache: KeyCache, outbox: Outbox,
) -> commands.KeyView:
    """A new key whose first version is generated and wrapped in custody."""
    tenant_id = request.tenant_id
    key_id = rpc.derived_id(request, "key_")  # a redelivered request finds the key it created
    policy = await tenant_settings(store, tenant_id)
    try:
        bits = domain.check_algorithm(cmd.algorithm, min_bits=policy.min_key_bits)
    except domain.KeyPolicyError as exc:
        raise unprocessable(exc, "algorithm") from None
    try:
        wrapped, kek_version = await hierarchy.new_data_key(tenant_id, key_id, 1, bits)
    except Sealed:
        raise sealed() from None
    key = domain.new_key(
        tenant_id=tenant_id, key_id=key_id, name=cmd.name, algorithm=cmd.algorithm, wrapped=wrapped,
        kek_version=kek_version, now=_now(), volume=cmd.volume, exportable=cmd.exportable,
        rotation_period_seconds=cmd.rotation_period_seconds,
        initial_state=domain.KeyState.ACTIVE if cmd.activate else domain.KeyState.PRE_ACTIVATION,
    )
    created = events.KeyCreated(**event_fields(request), key_id=key_id, name=cmd.name, algorithm=key.algorithm,
                                volume=cmd.volume)
    try:
        await store.insert_new_key(key, created)
    except DuplicateKeyError:
        earlier = await store.load_key(tenant_id, key_id)
        if earlier is None or earlier.name != cmd.name:
            raise rpc.ProblemError(409, "Conflict", f"a key named {cmd.name!r} exists", "name") from None
        cache.put(earlier)  # created by this request's first delivery; its event is staged with it
        return _view(earlier)
    cache.put(key)
    await outbox.publish(store.outbox_of("keys"), tenant_id, created)
    return _view(key)


async def get_key(request: rpc.RpcRequest, ref: commands.KeyRef, *, cache: KeyCache) -> commands.KeyView:
    return _view(await existing(cache, request.tenant_id, ref.key_id))


async def list_keys(request: rpc.RpcRequest, query: commands.ListQuery, *, store: KeyStore) -> commands.KeyList:
    heads = await store.list_heads(request.tenant_id, limit=query.limit, after=query.after)
    items = [commands.KeyView.model_validate(public_view(h)) for h in heads]
    return commands.KeyList(items=items, next=items[-1].key_id if len(items) == query.limit else None)


async def change_key_state(
    request: rpc.RpcRequest, call: commands.ChangeKeyStateCall, *, store: KeyStore, cache: KeyCache, outbox: Outbox
) -> commands.KeyView:
    """A lifecycle action (NIST SP 800-57), refused when the key's state does not allow it."""
    cmd = call.change
    key = await existing(cache, request.tenant_id, call.key_id)
    if made_by(key, request):
        return _view(key)
    try:
        changed, described = domain.transition(key, cmd.action, actor=request.actor.id, reason=cmd.reason, now=_now())
    except domain.IllegalTransition as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc), "action") from None
    event = events.KeyStateChanged(
        **event_fields(request), key_id=key.key_id, from_state=described["from"], to_state=described["to"],
        action=cmd.action, reason=cmd.reason,
    )
    return _view(await save(store, cache, key, changed, event, outbox, request=request))


async def rotate_key(
    request: rpc.RpcRequest, call: commands.RotateKeyCall, *, store: KeyStore, hierarchy: KeyHierarchy,
    cache: KeyCache, outbox: Outbox,
) -> commands.KeyView:
    """A new latest version; older versions still decrypt down to min_decryption_version."""
    key = await existing(cache, request.tenant_id, call.key_id)
    if made_by(key, request):
        return _view(key)
    bits = domain.ALGORITHMS[key.algorithm]
    wrapped, kek_version = await hierarchy.new_data_key(request.tenant_id, key.key_id, key.latest_version + 1, bits)
    try:
        rotated = domain.rotate(key, wrapped_new=wrapped, kek_version=kek_version, now=_now())
    except domain.IllegalTransition as exc:
        raise rpc.ProblemError(409, "Conflict", str(exc)) from None
    event = events.KeyRotated(**event_fields(request), key_id=key.key_id, key_version=rotated.latest_version,
                              reason=call.rotate.reason)
    return _view(await save(store, cache, key, rotated, event, outbox, request=request))


async def set_min_decryption_version(
    request: rpc.RpcRequest, call: SetMinDecryptionVersionCall, *, store: KeyStore, cache: KeyCache, outbox: Outbox
) -> commands.KeyView:
    """Retire old versions: those below min_decryption_version no longer decrypt."""
    cmd = call.change
    key = await existing(cache, request.tenant_id, call.key_id)
    if made_by(key, request):
        return _view(key)
    try:
        changed = domain.set_min_decryption_version(key, cmd.min_decryption_version, now=_now())
    except domain.VersionError as exc:
        raise unprocessable(exc, "min_decryption_version") from None
    event = events.KeyMinDecryptionVersionSet(
        **event_fields(request), key_id=key.key_id, min_decryption_version=cmd.min_decryption_version, reason=cmd.reason,
    )
    return _view(await save(store, cache, key, changed, event, outbox, request=request))


async def rotate_due_keys(*, store: KeyStore, hierarchy: KeyHierarchy, cache: KeyCache, outbox: Outbox, limit: int = 200) -> int:
    """Scheduler job: every key whose rotation period has passed gets a new version."""
    now = _now()
    rotated = 0
    for tenant_id, key_id in await store.keys_due_for_rotation(now, limit=limit):
        key = await store.load_key(tenant_id, key_id)
        if key is None or not domain.rotation_due(key, now=now):
            continue
        bits = domain.ALGORITHMS[key.algorithm]
        wrapped, kek_version = await hierarchy.new_data_key(key.tenant_id, key.key_id, key.latest_version + 1, bits)
        after = domain.rotate(key, wrapped_new=wrapped, kek_version=kek_version, now=now)
        event = events.KeyRotated(
            tenant_id=key.tenant_id, key_id=key.key_id, key_version=after.latest_version,
            reason=f"automatic rotation (period {key.rotation_period_seconds}s)",
        )
        try:
            await save(store, cache, key, after, event, outbox)
            rotated += 1
        except rpc.ProblemError:
            continue  # changed concurrently; the next tick looks again
    return rotated
