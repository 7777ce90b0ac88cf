"""What keysvc's handlers share: request fields for events, problems, the key lookup and its
compare-and-swap save, and the tenant's key policy."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Any

from shared import rpc
from shared.events import Event
from shared.outbox import Outbox

from . import keys as domain
from .cache import KeyCache
from .store import KeyStore

__all__ = ["event_fields", "existing", "iso", "made_by", "save", "sealed", "tenant_settings", "unprocessable"]


def event_fields(request: rpc.RpcRequest) -> dict[str, Any]:
    """Who asked, for the event a request causes."""
    return {"tenant_id": request.tenant_id, "correlation_id": request.correlation_id, "actor": request.actor,
            "source_ip": request.source_ip}


def unprocessable(exc: Exception | str, field_name: str | None = None) -> rpc.ProblemError:
    return rpc.ProblemError(422, "Unprocessable Content", str(exc), field_name)


def sealed() -> rpc.ProblemError:
    return rpc.ProblemError(503, "Service Unavailable", "key custody is sealed")


def iso(doc: dict[str, Any]) -> dict[str, Any]:
    """A stored document as operators see it: times in ISO 8601, store fields dropped."""
    return {k: (v.isoformat() if isinstance(v, datetime) else v) for k, v in doc.items()
            if k not in ("_id", "_outbox", "tenant_id")}


async def existing(cache: KeyCache, tenant_id: str, key_id: str) -> domain.Key:
    key = await cache.get(tenant_id, key_id)
    if key is None:
        raise rpc.NotFound("key", "key_id")
    return key


async def save(store: KeyStore, cache: KeyCache, before: domain.Key, after: domain.Key, event: Event,
               outbox: Outbox, *, request: rpc.RpcRequest | None = None) -> domain.Key:
    """Compare-and-swap the key with its event staged in the same write, then publish it; the saved
    key. With the operator's `request`, the key records it in that write (see `made_by`)."""
    if request is not None:
        after = dataclasses.replace(after, changed_by_request=request.request_id)
    if not await store.save_key(before, after, event):
        cache.drop(before.tenant_id, before.key_id)
        stored = await store.load_key(before.tenant_id, before.key_id) if request is not None else None
        if stored is not None and made_by(stored, request):  # this request's first delivery saved it
            cache.put(stored)
            return stored
        raise rpc.ProblemError(409, "Conflict", "the key changed concurrently; retry")
    cache.put(after)
    await outbox.publish(store.outbox_of("keys"), after.tenant_id, event)
    return after


def made_by(key: domain.Key, request: rpc.RpcRequest | None) -> bool:
    """Whether `request` made the key's latest change: a redelivered request whose first delivery
    saved its change (and died before recording its reply) answers with the key as it is."""
    return request is not None and key.changed_by_request == request.request_id


async def tenant_settings(store: KeyStore, tenant_id: str) -> domain.CustodySettings:
    """The tenant's key policy (defaults until a custodian sets one)."""
    return domain.CustodySettings(**await store.load_settings(tenant_id))
