"""keysvc's tenant key policy: read it, set it (later creations and destructions follow it)."""

from __future__ import annotations

from shared import commands, events, rpc
from shared.commands_custody import CustodySettingsBody
from shared.outbox import Outbox

from . import keys as domain
from .clock import now as _now
from .handlers_common import event_fields, tenant_settings, unprocessable
from .store import KeyStore


def _view(policy: domain.CustodySettings) -> CustodySettingsBody:
    return CustodySettingsBody(**policy.__dict__)


async def get_settings(request: rpc.RpcRequest, params: commands.NoParams, *, store: KeyStore) -> CustodySettingsBody:
    return _view(await tenant_settings(store, request.tenant_id))


async def put_settings(request: rpc.RpcRequest, body: CustodySettingsBody, *, store: KeyStore,
                       outbox: Outbox) -> CustodySettingsBody:
    """Set the tenant's key policy; later key creations and destructions follow it."""
    try:
        policy = domain.CustodySettings(**body.model_dump())
    except domain.KeyPolicyError as exc:
        raise unprocessable(exc) from None
    doc = {**policy.__dict__, "updated_at": _now(), "updated_by": request.actor.id}
    event = events.CustodySettingsChanged(**event_fields(request), settings={**policy.__dict__})
    await store.save_settings(request.tenant_id, doc, event)
    await outbox.publish(store.outbox_of("settings"), request.tenant_id, event)
    return _view(policy)
