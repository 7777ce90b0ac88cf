"""Continuous forwarders: their RPC handlers and the pool that runs them.

Each forwarder keeps a durable cursor (the last sequence number it forwarded) in its document.
The pool reads records after the cursor, sends the selected ones, and moves the cursor only
once the destination took them (compare-and-swap on the old cursor). A failure keeps the cursor,
records the error for operators and retries with exponential backoff; a restart resumes from the
stored cursor. A lease per forwarder keeps a second auditsvc instance from sending the same batch.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
from datetime import UTC, datetime, timedelta
from typing import Any

import structlog
from pydantic import ValidationError

from shared import events, rpc
from shared.crypto.envelope import UnwrapError
from shared.crypto.sealing import SecretSealer
from shared.outbox import Outbox, push, staged

from .forwarding import ForwarderChange, ForwarderSpec, backoff_seconds, selected, syslog_payload, webhook_body
from .search import Criteria
from .senders import Sender, SendError, SyslogSender, WebhookSender, tls_context
from .settings import AuditSettings
from .store import AuditStore

log = structlog.get_logger("strongroom.auditsvc")

_HIDDEN = {"_id": 0, "_outbox": 0, "secret": 0, "url": 0, "lease_owner": 0, "lease_until": 0}


def _now() -> datetime:
    return datetime.now(UTC)


def _validated(model: Any, params: dict[str, Any]) -> Any:
    try:
        return model.model_validate(params)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or str(err.get("msg", "")).split(":", 2)[0].split()[-1]
        raise rpc.ProblemError(422, "Unprocessable Content", f"{field}: {err['msg']}", field) from None


def _event_fields(request: rpc.RpcRequest) -> dict[str, Any]:
    return {"tenant_id": request.tenant_id, "actor": request.actor, "correlation_id": request.correlation_id,
            "source_ip": request.source_ip}


async def _view(store: AuditStore, doc: dict[str, Any]) -> dict[str, Any]:
    """A forwarder as operators see it: config, cursor, lag and last error; never its secret."""
    view = {k: v for k, v in doc.items() if k not in _HIDDEN}
    head = await store.head(doc["tenant_id"])
    cursor = doc.get("cursor", 0)
    view["lag_records"] = max(0, head.seq - cursor)
    oldest = await store.query(doc["tenant_id"], Criteria(), after_seq=cursor, limit=1)
    lag = 0.0
    if oldest:
        lag = max(0.0, (_now() - datetime.fromisoformat(oldest[0]["time"].replace("Z", "+00:00"))).total_seconds())
    view["lag_seconds"] = round(lag, 3)
    return view


SECRET_PURPOSE = "forwarder_secret"


def _new_secret() -> str:
    return "whsec_" + secrets.token_urlsafe(32)


def _seal(sealer: SecretSealer, secret: str, tenant_id: str, forwarder_id: str) -> str:
    # SECURITY: bound to tenant and forwarder, so a sealed secret copied elsewhere does not open.
    return sealer.seal(secret, purpose=SECRET_PURPOSE, tenant_id=tenant_id, owner=forwarder_id)


async def create_forwarder(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore,
                           outbox: Outbox, sealer: SecretSealer) -> dict[str, Any]:
    spec: ForwarderSpec = _validated(ForwarderSpec, params)
    forwarder_id = events.new_id("fwd_")
    start = 0 if spec.start == "beginning" else (await store.head(request.tenant_id)).seq
    secret = _new_secret() if spec.kind == "webhook" else None
    doc = {
        **spec.model_dump(exclude={"start"}), "forwarder_id": forwarder_id, "destination": spec.destination(),
        "secret": None if secret is None else _seal(sealer, secret, request.tenant_id, forwarder_id), "cursor": start, "delivered": 0, "failures": 0, "status": "active",
        "last_error": None, "last_error_at": None, "last_delivered_at": None, "created_at": _now(),
    }
    event = events.ForwarderCreated(**_event_fields(request), forwarder_id=forwarder_id, name=spec.name,
                                    kind=spec.kind, destination=spec.destination(), format=spec.format,
                                    event_types=tuple(spec.event_types))
    await store.forwarders.insert(request.tenant_id, staged(doc, event))
    await outbox.publish(store.forwarders.raw, request.tenant_id, event)
    created = await store.forwarders.find_one(request.tenant_id, {"forwarder_id": forwarder_id})
    view = await _view(store, created)
    if secret:
        view["secret"] = secret  # shown once, here; used to verify the HMAC signature header
    return view


async def list_forwarders(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore) -> dict[str, Any]:
    docs = await store.forwarders.find(request.tenant_id, {}, sort=[("created_at", 1)])
    return {"items": [await _view(store, d) for d in docs]}


async def get_forwarder(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore) -> dict[str, Any]:
    doc = await store.forwarders.find_one(request.tenant_id, {"forwarder_id": str(params.get("forwarder_id"))})
    if doc is None:
        raise rpc.NotFound("forwarder", "forwarder_id")
    return await _view(store, doc)


async def update_forwarder(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore,
                           outbox: Outbox) -> dict[str, Any]:
    forwarder_id = str(params.get("forwarder_id"))
    change: ForwarderChange = _validated(ForwarderChange, params.get("change") or {})
    fields = change.model_dump(exclude_none=True)
    if not fields:
        raise rpc.ProblemError(422, "Unprocessable Content", "nothing to change", "body")
    event = events.ForwarderUpdated(**_event_fields(request), forwarder_id=forwarder_id, changes=fields)
    if not await store.forwarders.update_one(request.tenant_id, {"forwarder_id": forwarder_id},
                                             {"$set": fields, **push(event)}):
        raise rpc.NotFound("forwarder", "forwarder_id")
    await outbox.publish(store.forwarders.raw, request.tenant_id, event)
    return await get_forwarder(request, {"forwarder_id": forwarder_id}, store=store)


async def rotate_forwarder_secret(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore,
                                  outbox: Outbox, sealer: SecretSealer) -> dict[str, Any]:
    """A webhook forwarder's new signing secret, returned this once; deliveries from now on use it."""
    forwarder_id = str(params.get("forwarder_id"))
    doc = await store.forwarders.find_one(request.tenant_id, {"forwarder_id": forwarder_id})
    if doc is None:
        raise rpc.NotFound("forwarder", "forwarder_id")
    if doc["kind"] != "webhook":
        raise rpc.ProblemError(409, "Conflict", "only webhook forwarders have a signing secret", "forwarder_id")
    secret = _new_secret()
    event = events.ForwarderSecretRotated(**_event_fields(request), forwarder_id=forwarder_id)
    # Compare-and-swap on the sealed value read: of two concurrent rotations one wins, the other
    # is told so rather than handing out a secret that is not the one in use.
    if not await store.forwarders.update_one(
            request.tenant_id, {"forwarder_id": forwarder_id, "secret": doc["secret"]},
            {"$set": {"secret": _seal(sealer, secret, request.tenant_id, forwarder_id)}, **push(event)}):
        raise rpc.ProblemError(409, "Conflict", "the forwarder changed meanwhile; rotate again", "forwarder_id")
    await outbox.publish(store.forwarders.raw, request.tenant_id, event)
    view = await get_forwarder(request, {"forwarder_id": forwarder_id}, store=store)
    view["secret"] = secret  # shown once, here
    return view


async def delete_forwarder(request: rpc.RpcRequest, params: dict[str, Any], *, store: AuditStore,
                           outbox: Outbox) -> dict[str, Any]:
    forwarder_id = str(params.get("forwarder_id"))
    doc = await store.forwarders.find_one(request.tenant_id, {"forwarder_id": forwarder_id})
    if doc is None:
        raise rpc.NotFound("forwarder", "forwarder_id")
    event = events.ForwarderDeleted(**_event_fields(request), forwarder_id=forwarder_id)
    # The event is published before the document goes: a crash in between leaves a forwarder
    # that can be deleted again, never a deletion nobody recorded.
    await outbox.publish(store.forwarders.raw, request.tenant_id, event)
    await store.forwarders.delete_one(request.tenant_id, {"forwarder_id": forwarder_id})
    return {"forwarder_id": forwarder_id, "deleted": True}


def _sender_for(doc: dict[str, Any], sealer: SecretSealer) -> Sender:
    if doc["kind"] == "webhook":
        secret = sealer.open(doc["secret"], purpose=SECRET_PURPOSE, tenant_id=doc["tenant_id"],
                             owner=doc["forwarder_id"])
        return WebhookSender(doc["url"], secret, forwarder_id=doc["forwarder_id"])
    tls = tls_context(doc.get("tls_ca_pem")) if doc["kind"] == "syslog_tls" else None
    return SyslogSender(doc["host"], doc["port"], tls=tls, server_name=doc.get("tls_server_name"))


def _fingerprint(doc: dict[str, Any]) -> tuple[Any, ...]:
    return tuple(doc.get(k) for k in ("kind", "host", "port", "url", "tls_ca_pem", "tls_server_name", "secret"))


class ForwarderPool:
    """Runs one task per enabled forwarder; `stop` lets each finish its batch before it ends."""

    def __init__(self, store: AuditStore, settings: AuditSettings, sealer: SecretSealer):
        self._store = store
        self._settings = settings
        self._sealer = sealer
        self._owner = events.new_id("fwdpool_")
        self._hostname = socket.gethostname()
        self._tasks: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._stopping = asyncio.Event()

    async def run(self) -> None:
        while not self._stopping.is_set():
            try:
                docs = await self._store.forwarders.raw.find({"enabled": True}, {"tenant_id": 1, "forwarder_id": 1}).to_list(None)
                wanted = {(d["tenant_id"], d["forwarder_id"]) for d in docs}
                for key in wanted - set(self._tasks):
                    self._tasks[key] = asyncio.create_task(self._forward(*key))
                for key, task in list(self._tasks.items()):
                    if task.done():
                        del self._tasks[key]
            except Exception:
                log.exception("forwarder_pool_failed")
            await self._pause(self._settings.forwarder_poll_seconds)

    async def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        tasks = list(self._tasks.values())
        if tasks:
            _, pending = await asyncio.wait(tasks, timeout=timeout)
            for task in pending:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

    async def _pause(self, seconds: float) -> None:
        try:
            await asyncio.wait_for(self._stopping.wait(), seconds)
        except TimeoutError:
            pass

    async def _lease(self, tenant_id: str, forwarder_id: str) -> bool:
        now = _now()
        until = now + timedelta(seconds=self._settings.forwarder_lease_seconds)
        return bool(await self._store.forwarders.update_one(
            tenant_id,
            {"forwarder_id": forwarder_id, "$or": [{"lease_owner": self._owner}, {"lease_owner": None},
                                                   {"lease_until": {"$lt": now}}]},
            {"$set": {"lease_owner": self._owner, "lease_until": until}},
        ))

    async def _forward(self, tenant_id: str, forwarder_id: str) -> None:
        store, settings = self._store, self._settings
        sender: Sender | None = None
        fingerprint: tuple[Any, ...] = ()
        failures = 0
        try:
            while not self._stopping.is_set():
                doc = await store.forwarders.find_one(tenant_id, {"forwarder_id": forwarder_id})
                if doc is None or not doc.get("enabled"):
                    return
                if not await self._lease(tenant_id, forwarder_id):
                    await self._pause(settings.forwarder_lease_seconds / 3)
                    continue
                if sender is None or _fingerprint(doc) != fingerprint:
                    if sender is not None:
                        await sender.close()
                        sender = None
                    try:
                        sender, fingerprint = _sender_for(doc, self._sealer), _fingerprint(doc)
                    except UnwrapError:  # sealed under another data key: only a rotation helps
                        await store.forwarders.update_one(tenant_id, {"forwarder_id": forwarder_id}, {"$set": {
                            "status": "error", "last_error_at": _now(),
                            "last_error": "its signing secret does not open under this data key; rotate the secret"}})
                        await self._pause(settings.forwarder_max_backoff_seconds)
                        continue
                cursor = doc.get("cursor", 0)
                records = await store.query(tenant_id, Criteria(), after_seq=cursor, limit=settings.forwarder_batch_size)
                if not records:
                    await self._pause(settings.forwarder_poll_seconds)
                    continue
                chosen = [r for r in records if selected(r["action"], doc.get("event_types") or [])]
                try:
                    if chosen:
                        if doc["kind"] == "webhook":
                            payload = webhook_body(chosen, doc["format"], tenant_id=tenant_id, forwarder_id=forwarder_id)
                        else:
                            payload = syslog_payload(chosen, doc["format"], hostname=self._hostname)
                        await sender.send(payload)
                except SendError as exc:
                    failures += 1
                    delay = backoff_seconds(failures, cap=settings.forwarder_max_backoff_seconds)
                    await store.forwarders.update_one(tenant_id, {"forwarder_id": forwarder_id}, {"$set": {
                        "status": "retrying", "failures": failures, "last_error": str(exc)[:500],
                        "last_error_at": _now(), "next_attempt_at": _now() + timedelta(seconds=delay)}})
                    log.warning("forwarder_send_failed", forwarder_id=forwarder_id, failures=failures, error=str(exc))
                    await self._pause(delay)
                    continue
                failures = 0
                moved = await store.forwarders.update_one(
                    tenant_id, {"forwarder_id": forwarder_id, "cursor": cursor},
                    {"$set": {"cursor": records[-1]["seq"], "status": "active", "failures": 0,
                              "last_delivered_at": _now(), "next_attempt_at": None},
                     "$inc": {"delivered": len(chosen)}},
                )
                if not moved:  # another owner moved it (lease lost): re-read before sending more
                    log.warning("forwarder_cursor_moved", forwarder_id=forwarder_id)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("forwarder_failed", forwarder_id=forwarder_id)
        finally:
            if sender is not None:
                await sender.close()
            await store.forwarders.update_one(tenant_id, {"forwarder_id": forwarder_id, "lease_owner": self._owner},
                                              {"$set": {"lease_owner": None, "lease_until": None}})
