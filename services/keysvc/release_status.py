"""Look up a recorded release: how an agent that waited for approval collects its sealed key."""

from __future__ import annotations

from typing import Any

from shared import rpc

from .store import KeyStore


async def get_release(request: rpc.RpcRequest, params: dict[str, Any], *, store: KeyStore) -> dict[str, Any] | None:
    """The recorded outcome (released, sealed to the request's one-time key, or refused) of one
    request by one device; None while nothing is recorded. Scoped to the asking device."""
    doc = await store.releases.find_one(
        request.tenant_id, {"request_id": str(params.get("request_id", "")), "device_id": str(params.get("device_id", ""))}
    )
    return None if doc is None else {"request_id": doc["request_id"], "outcome": doc["outcome"]}
