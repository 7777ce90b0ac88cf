"""Continuous forwarders' RPC handlers: create, list, show, change, rotate the secret, delete.

The pool that runs them is `forwarder_pool.py`; what they send and how is `forwarding.py`.
"""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

import structlog

from shared import events, rpc
from shared.commands_audit import (
    ForwarderDeleted,
    ForwarderList,
    ForwarderRef,
    ForwarderSpec,
    ForwarderView,
    NoParams,
    UpdateForwarder,
)
from shared.crypto.sealing import SecretSealer
from shared.outbox import Outbox

from .destinations import REFUSED, Allowed
from .forwarding import new_forwarder, operator_view
from .search import Criteria
from .senders import DestinationRefused, Resolve, SendError, pinned_address, system_resolve, url_host_port
from .store import AuditStore
from .store_forwarders import ForwarderStore

SECRET_PURPOSE = "forwarder_secret"
log = structlog.get_logger("strongroom.auditsvc")


def _now() -> datetime:
    return datetime.now(UTC)


def _event_fields(request: rpc.RpcRequest) -> dict[str, Any]:
    return {"tenant_id": request.tenant_id, "actor": request.actor, "correlation_id": request.correlation_id,
            "source_ip": request.source_ip}


async def _view(store: AuditStore, doc: dict[str, Any]) -> dict[str, Any]:
    head = await store.head(doc["tenant_id"])
    oldest = await store.query(doc["tenant_id"], Criteria(), after_seq=doc.get("cursor", 0), limit=1)
    return operator_view(doc, head_seq=head.seq, oldest_unsent=oldest[0]["time"] if oldest else None, now=_now())


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def seal_secret(sealer: SecretSealer, secret: str, tenant_id: str, forwarder_id: str) -> str:
    # SECURITY: bound to tenant and forwarder, so a sealed secret copied elsewhere does not open.
    return sealer.seal(secret, purpose=SECRET_PURPOSE, tenant_id=tenant_id, owner=forwarder_id)


def open_secret(sealer: SecretSealer, doc: dict[str, Any]) -> str:
    return sealer.open(doc["secret"], purpose=SECRET_PURPOSE, tenant_id=doc["tenant_id"], owner=doc["forwarder_id"])


async def _found(forwarders: ForwarderStore, tenant_id: str, forwarder_id: str) -> dict[str, Any]:
    doc = await forwarders.forwarder(tenant_id, forwarder_id)
    if doc is None:
        raise rpc.NotFound("forwarder", "forwarder_id")
    return doc


async def check_destination(spec: ForwarderSpec, tenant_id: str, *, allow: Sequence[Allowed], resolve: Resolve) -> None:
    """A 422 naming the field when the destination is an address, or a name resolving only to
    addresses, that forwarders may not reach. A name that does not resolve yet passes: every
    connection checks again (senders.py), which also catches a name that changes later."""
    field = "url" if spec.kind == "webhook" else "host"
    host, port = url_host_port(spec.url or "") if spec.kind == "webhook" else (spec.host or "", spec.port or 0)
    try:
        await pinned_address(host, port, allow=allow, resolve=resolve, timeout=5.0)
    except DestinationRefused as exc:
        log.info("forwarder_destination_refused", tenant_id=tenant_id, field=field, detail=exc.detail)
        raise rpc.ProblemError(422, "Unprocessable Content", f"{field}: {REFUSED}: forwarders may not send there",
                               field) from None
    except SendError:
        return


async def create_forwarder(request: rpc.RpcRequest, spec: ForwarderSpec, *, store: AuditStore,
                           forwarders: ForwarderStore, outbox: Outbox, sealer: SecretSealer,
                           allow: Sequence[Allowed] = (), resolve: Resolve = system_resolve) -> ForwarderView:
    tenant_id = request.tenant_id
    await check_destination(spec, tenant_id, allow=allow, resolve=resolve)
    forwarder_id = events.new_id("fwd_")
    start = 0 if spec.start == "beginning" else (await store.head(tenant_id)).seq
    secret = _new_secret() if spec.kind == "webhook" else None
    doc = new_forwarder(spec, forwarder_id=forwarder_id, cursor=start, now=_now(),
                        sealed_secret=None if secret is None else seal_secret(sealer, secret, tenant_id, forwarder_id))
    event = events.ForwarderCreated(**_event_fields(request), forwarder_id=forwarder_id, name=spec.name,
                                    kind=spec.kind, destination=spec.destination(), format=spec.format,
                                    event_types=tuple(spec.event_types))
    await forwarders.insert_forwarder(tenant_id, doc, event)
    await outbox.publish(forwarders.collection, tenant_id, event)
    view = await _view(store, await _found(forwarders, tenant_id, forwarder_id))
    if secret:
        view["secret"] = secret  # shown once, here; used to verify the HMAC signature header
    return ForwarderView(**view)


async def list_forwarders(request: rpc.RpcRequest, params: NoParams, *, store: AuditStore,
                          forwarders: ForwarderStore) -> ForwarderList:
    docs = await forwarders.list_forwarders(request.tenant_id)
    return ForwarderList(items=[ForwarderView(**await _view(store, d)) for d in docs])


async def get_forwarder(request: rpc.RpcRequest, ref: ForwarderRef, *, store: AuditStore,
                        forwarders: ForwarderStore) -> ForwarderView:
    return ForwarderView(**await _view(store, await _found(forwarders, request.tenant_id, ref.forwarder_id)))


async def update_forwarder(request: rpc.RpcRequest, update: UpdateForwarder, *, store: AuditStore,
                           forwarders: ForwarderStore, outbox: Outbox) -> ForwarderView:
    fields = update.change.model_dump(exclude_none=True)
    if not fields:
        raise rpc.ProblemError(422, "Unprocessable Content", "nothing to change", "body")
    event = events.ForwarderUpdated(**_event_fields(request), forwarder_id=update.forwarder_id, changes=fields)
    if not await forwarders.change_forwarder(request.tenant_id, update.forwarder_id, fields, event):
        raise rpc.NotFound("forwarder", "forwarder_id")
    await outbox.publish(forwarders.collection, request.tenant_id, event)
    return await get_forwarder(request, ForwarderRef(forwarder_id=update.forwarder_id), store=store,
                               forwarders=forwarders)


async def rotate_forwarder_secret(request: rpc.RpcRequest, ref: ForwarderRef, *, store: AuditStore,
                                  forwarders: ForwarderStore, outbox: Outbox, sealer: SecretSealer) -> ForwarderView:
    """A webhook forwarder's new signing secret, returned this once; deliveries from now on use it."""
    tenant_id, forwarder_id = request.tenant_id, ref.forwarder_id
    doc = await _found(forwarders, tenant_id, forwarder_id)
    if doc["kind"] != "webhook":
        raise rpc.ProblemError(409, "Conflict", "only webhook forwarders have a signing secret", "forwarder_id")
    secret = _new_secret()
    event = events.ForwarderSecretRotated(**_event_fields(request), forwarder_id=forwarder_id)
    # Of two concurrent rotations one wins, the other is told so rather than handing out a
    # secret that is not the one in use.
    if not await forwarders.replace_secret(tenant_id, forwarder_id, old=doc["secret"], event=event,
                                           new=seal_secret(sealer, secret, tenant_id, forwarder_id)):
        raise rpc.ProblemError(409, "Conflict", "the forwarder changed meanwhile; rotate again", "forwarder_id")
    await outbox.publish(forwarders.collection, tenant_id, event)
    view = await _view(store, await _found(forwarders, tenant_id, forwarder_id))
    view["secret"] = secret  # shown once, here
    return ForwarderView(**view)


async def delete_forwarder(request: rpc.RpcRequest, ref: ForwarderRef, *, forwarders: ForwarderStore,
                           outbox: Outbox) -> ForwarderDeleted:
    await _found(forwarders, request.tenant_id, ref.forwarder_id)
    event = events.ForwarderDeleted(**_event_fields(request), forwarder_id=ref.forwarder_id)
    # The event is published before the document goes: a crash in between leaves a forwarder
    # that can be deleted again, never a deletion nobody recorded.
    await outbox.publish(forwarders.collection, request.tenant_id, event)
    await forwarders.delete_forwarder(request.tenant_id, ref.forwarder_id)
    return ForwarderDeleted(forwarder_id=ref.forwarder_id, deleted=True)
