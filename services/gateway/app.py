"""The gateway's composition root: settings, store, bus and authenticators bound into an aiohttp app."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from functools import partial

import structlog
from aiohttp import web
from pymongo import AsyncMongoClient

from shared import events
from shared.bus import Bus
from shared.crypto import tokens
from shared.metrics import Metrics
from shared.observability import Probe, bus_check, store_check, time_store
from shared.service import stop_if_cancelled
from shared.store import service_database

from . import evidence, routes
from .accounts.common import ACCOUNTS, Accounts
from .accounts.invitations import retry_notices
from .auth import PROVIDER_TENANT, UNVERIFIED, DeviceAuthenticator, RateLimited, TokenAuthenticator, Unauthorized
from .backlog import Backlog
from .console import routes as console
from .notifications import NOTIFIER, NOTIFY_ON_DEMAND, NOTIFY_PATTERNS, NOTIFY_VIA_WAITERS, Notifier
from .openapi import build_spec
from .problems import problem_middleware
from .ratelimit import Throttles
from .releases import RELEASE_OUTCOMES, ReleaseWaiters
from .settings import GatewaySettings
from .state import CORRELATION_ID, GATEWAY, PROBE, REFUSAL_RECORDED, THROTTLES, Gateway
from .store import GatewayStore
from .stream_binding import OnDemandBinding

log = structlog.get_logger("strongroom.gateway")
OPENAPI = web.AppKey("openapi", dict)


@web.middleware
async def request_context(request: web.Request, handler):
    """Binds the correlation id for every log line of the request; one canonical line at the end."""
    correlation_id = request.headers.get("X-Correlation-Id", "")[:64] or events.new_id()
    request[CORRELATION_ID] = correlation_id
    structlog.contextvars.clear_contextvars()
    structlog.contextvars.bind_contextvars(correlation_id=correlation_id)
    started = time.perf_counter()
    response = await handler(request)
    response.headers["X-Correlation-Id"] = correlation_id
    seconds = time.perf_counter() - started
    log.info("http_request", method=request.method, path=request.path, status=response.status,
             ms=round(seconds * 1000, 2))
    # By route template, never the raw path: a path holds ids and whatever a client sends.
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    request.app[PROBE].metrics.handled.labels("http", f"{request.method} {route}").observe(seconds)
    return response


@web.middleware
async def refused_authentication(request: web.Request, handler):
    """Failed authentication, on every route: rate limited per source address (an address over
    its limit has no credential it sends tried at all: 429 + Retry-After) and audited."""
    failures = request.app[THROTTLES].auth_failures
    source = f"ip:{request.remote}"
    wait = failures.peek(source, time.monotonic())
    denials = request.app[PROBE].metrics.denials
    if wait is not None:
        log.info("authentication_throttled", path=request.path)
        denials.labels("authentication", "throttled").inc()
        raise RateLimited(wait, "too many failed authentications from this address; retry later")
    try:
        return await handler(request)
    except Unauthorized as exc:
        failures.take(source, time.monotonic())
        denials.labels("authentication", "credential").inc()
        log.info("access_denied", path=request.path, cause=exc.cause)
        if not request.get(REFUSAL_RECORDED):
            await _audit_refusal(request, exc)
        raise


async def _audit_refusal(request: web.Request, exc: Unauthorized) -> None:
    """SECURITY: a refusal goes into a tenant's chain only when the device or credential it names
    was found there (`exc.tenant_id`, its actor marked unverified); what a request merely claims
    (a key id, a token that matches nothing) never picks a tenant. Everything else goes to the
    provider's own chain: the provider-level security log."""
    device_route = request.path.startswith("/v1/agent/")
    actor = exc.actor or events.Actor(kind="device" if device_route else "user", id="unknown", auth=UNVERIFIED)
    tenant_id = exc.tenant_id or PROVIDER_TENANT
    await request.app[GATEWAY].store.record_event(tenant_id, events.AccessDenied(
        tenant_id=tenant_id, correlation_id=request[CORRELATION_ID], source_ip=request.remote,
        actor=actor, route=request.path, reason=exc.cause,
        device_id=actor.id if exc.tenant_id and actor.kind == "device" else None,
    ))


async def openapi(request: web.Request) -> web.Response:
    return web.json_response(request.app[OPENAPI])


async def _housekeeping(store: GatewayStore) -> None:
    while True:
        await asyncio.sleep(60)
        try:
            await store.forget_expired_nonces(datetime.now(UTC))
            await store.evidence.forget_expired_challenges(datetime.now(UTC))
            await store.forget_published_events()
        except Exception:
            stop_if_cancelled()
            log.exception("housekeeping_failed")


async def _forget_revoked(event: events.Event, *, gateway: Gateway) -> None:
    """Another gateway instance revoked a device or token: drop our cached copy."""
    if isinstance(event, events.DeviceRevoked):
        gateway.devices.forget(event.tenant_id, event.device_id)
    elif isinstance(event, events.TokenRevoked):
        gateway.operators.forget(event.token_id)


# Another gateway instance changed a user, a session or a tenant: drop our cached copies.
ACCOUNT_CHANGES = ["user.#", "tenant.#"]


async def _forget_account_changes(event: events.Event, *, gateway: Gateway) -> None:
    if isinstance(event, events.UserLoggedOut):
        gateway.operators.forget_session(event.session_id)
    user_id = getattr(event, "user_id", None)
    if user_id:
        gateway.operators.forget_user(event.tenant_id, user_id)
    if event.type.startswith("tenant."):  # type: ignore[attr-defined]
        gateway.operators.forget_tenant(event.tenant_id)


async def _release_outcome(event: events.Event, *, waiters: ReleaseWaiters, notifier: Notifier) -> None:
    """Key outcomes settle the waiting requests, and those operators watch go to the notifier too
    (one queue for both)."""
    await waiters.on_outcome(event)
    if event.type in NOTIFY_VIA_WAITERS:
        await notifier.on_event(event)


async def init_app(settings: GatewaySettings, *, bus: Bus, client: AsyncMongoClient) -> web.Application:
    db = service_database(client, "gateway", prefix=settings.db_prefix)
    store = GatewayStore(db, publish=bus.publish)
    await store.create_indexes()
    app = build_app(settings, bus=bus, store=store)
    time_store(app[PROBE], client, db)

    async def relay(app: web.Application):
        await store.outbox.relay()
        tasks = [asyncio.create_task(store.outbox.run()), asyncio.create_task(_housekeeping(store))]
        yield
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        for each in app[PROBE].on_stop:
            each()

    app.cleanup_ctx.append(relay)
    return app


def build_app(settings: GatewaySettings, *, bus: Bus, store: GatewayStore) -> web.Application:
    """The gateway over any store with `GatewayStore`'s methods (`store_memory.py` in unit tests)."""
    bootstrap = settings.bootstrap_token.get_secret_value() if settings.bootstrap_token else None
    gateway = Gateway(
        settings=settings,
        bus=bus,
        store=store,
        operators=TokenAuthenticator(store.accounts, bootstrap_digest=tokens.digest(bootstrap) if bootstrap else None,
                                     idle_seconds=settings.session_idle_seconds,
                                     absolute_seconds=settings.session_absolute_seconds),
        devices=DeviceAuthenticator(store, max_age_seconds=settings.signature_max_age_seconds),
        waiters=ReleaseWaiters(),
        evidence=evidence.registry(settings),
        backlog=Backlog(bus.queue_depth, limit=settings.queue_depth_limit,
                        refresh_seconds=settings.queue_depth_refresh_seconds),
    )
    app = web.Application(
        middlewares=[request_context, problem_middleware, refused_authentication], client_max_size=settings.max_body_bytes
    )
    app[GATEWAY] = gateway
    app[PROBE] = probe = Probe("gateway", Metrics("gateway"), {
        "store": store_check(store.ping, settings.store_timeout_seconds), "bus": bus_check(bus)})
    app[ACCOUNTS] = Accounts.from_settings(settings)
    app[THROTTLES] = Throttles.from_settings(settings)
    app[NOTIFIER] = Notifier(on_demand=OnDemandBinding(NOTIFY_ON_DEMAND, linger=settings.stream_binding_linger_seconds))
    gateway.operators.on_change = app[NOTIFIER].recheck
    routes.setup(app)
    console.setup(app)
    spec = build_spec(settings.deployment)
    spec["paths"]["/v1/openapi.json"] = {"get": {"summary": "This document", "operationId": "get_openapi",
                                                 "responses": {"200": {"description": "OpenAPI 3.1 document"}}}}
    app[OPENAPI] = spec
    app.router.add_get("/v1/openapi.json", openapi)

    async def mail_retries(app: web.Application):
        task = asyncio.create_task(retry_notices(gateway, app[ACCOUNTS]))
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(mail_retries)

    async def watch_backlog(app: web.Application):
        task = asyncio.create_task(gateway.backlog.run())
        yield
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    app.cleanup_ctx.append(watch_backlog)

    async def listen(app: web.Application):
        await bus.listen(RELEASE_OUTCOMES, probe.metrics.timed("listen", partial(
            _release_outcome, waiters=gateway.waiters, notifier=app[NOTIFIER])))
        app[NOTIFIER].on_demand.attach(await bus.listen(NOTIFY_PATTERNS, app[NOTIFIER].on_event))  # type: ignore[union-attr]
        await bus.listen(["device.revoked", "token.revoked"], partial(_forget_revoked, gateway=gateway))
        await bus.listen(ACCOUNT_CHANGES, partial(_forget_account_changes, gateway=gateway))
        yield
        await app[NOTIFIER].on_demand.close()  # type: ignore[union-attr]

    app.cleanup_ctx.append(listen)
    return app
