"""The replies of a service's state-changing calls, by request id, in the service's own store.

The broker redelivers a request whose replica died before acking it (the ack follows the reply).
`rpc.Methods` looks the request up here first and answers a redelivery with the recorded reply,
so one request changes state at most once; a call costs one indexed read and one insert.
"""

from __future__ import annotations

import structlog
from pymongo import ASCENDING
from pymongo.asynchronous.database import AsyncDatabase

from .events import utcnow
from .rpc import RpcReply, RpcRequest, decode_reply, encode
from .store import STORE_UNAVAILABLE, DuplicateKeyError, TenantCollection

log = structlog.get_logger("strongroom.rpc")

COLLECTION = "rpc_replies"
# A request message expires with its caller's deadline (seconds; `bus.call`), so no redelivery
# comes after that: a day of replies is ample, and the store drops older ones (a TTL index).
KEEP_SECONDS = 86_400


class ReplyLog:
    def __init__(self, db: AsyncDatabase):
        self._replies = TenantCollection(db[COLLECTION])

    async def create_indexes(self) -> None:
        await self._replies.raw.create_index(
            [("tenant_id", ASCENDING), ("request_id", ASCENDING), ("method", ASCENDING)], unique=True)
        await self._replies.raw.create_index("at", expireAfterSeconds=KEEP_SECONDS)

    async def recorded(self, request: RpcRequest) -> RpcReply | None:
        doc = await self._replies.find_one(
            request.tenant_id, {"request_id": request.request_id, "method": request.method}, projection={"reply": 1})
        return None if doc is None else decode_reply(doc["reply"].encode())

    async def record(self, request: RpcRequest, reply: RpcReply) -> None:
        """Once the effect is durable. Should the store fail now, the caller still gets the true
        reply; only a redelivery of this very request would then run it again."""
        doc = {"request_id": request.request_id, "method": request.method, "reply": encode(reply).decode(),
               "correlation_id": request.correlation_id, "at": utcnow()}
        try:
            await self._replies.insert(request.tenant_id, doc)
        except DuplicateKeyError:
            pass  # two deliveries ran at once (a replica cut off from the broker, not dead): one record
        except STORE_UNAVAILABLE as exc:
            log.warning("rpc_reply_not_recorded", error=type(exc).__name__)
