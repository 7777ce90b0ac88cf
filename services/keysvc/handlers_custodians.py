"""Root custodians' own keys and shares: enrol (or replace) your public key, list who has enrolled,
fetch your own sealed share once. keysvc never sees a custodian's private key."""

from __future__ import annotations

from shared import commands, events, rpc
from shared.commands_custody import CustodianKey, CustodianKeys, EnrolCustodianKey, SealedDelivery
from shared.crypto import shares as transit
from shared.outbox import Outbox

from . import custodians as custodianship
from .clock import now as _now
from .handlers_common import event_fields, iso, unprocessable
from .store import SYSTEM_TENANT, KeyStore


async def enrol_key(request: rpc.RpcRequest, cmd: EnrolCustodianKey, *, store: KeyStore, outbox: Outbox) -> CustodianKey:
    """The signed-in root custodian's own X25519 public key: their next share is sealed to it."""
    try:
        transit.check_recipient(cmd.public_key)
    except transit.ShareTransportError as exc:
        raise unprocessable(exc, "public_key") from None
    key_id = custodianship.key_id(cmd.public_key)
    event = events.CustodyCustodianKeyEnrolled(**event_fields(request), custodian_id=request.actor.id, key_id=key_id)
    at = _now()
    await store.enrol_custodian_key(request.actor.id, {"public_key": cmd.public_key, "key_id": key_id,
                                                       "enrolled_at": at}, event)
    await outbox.publish(store.outbox_of("custody"), SYSTEM_TENANT, event)
    return CustodianKey(custodian_id=request.actor.id, key_id=key_id, enrolled_at=at.isoformat())


async def list_keys(request: rpc.RpcRequest, params: commands.NoParams, *, store: KeyStore) -> CustodianKeys:
    """Who has enrolled a key (ids and key fingerprints; public keys stay inside keysvc)."""
    docs = await store.custodian_keys()
    return CustodianKeys(items=[CustodianKey.model_validate(iso({k: d[k] for k in ("custodian_id", "key_id", "enrolled_at")}))
                                for d in docs])


async def my_share(request: rpc.RpcRequest, params: commands.NoParams, *, store: KeyStore) -> SealedDelivery:
    """The caller's waiting share (for the current root or a pending re-key), sealed to their key; removed once taken."""
    root = await store.root_record() or {}
    rekey = root.get("rekey") or {}
    fingerprints = tuple(fp for fp in (root.get("fingerprint"), rekey.get("new_fingerprint")) if fp)
    doc = await store.take_delivery(request.actor.id, fingerprints)
    if doc is None:
        raise rpc.NotFound("a share waiting for you (each is shown once)")
    fields = set(SealedDelivery.model_fields)
    return SealedDelivery.model_validate({k: v for k, v in doc.items() if k in fields})
