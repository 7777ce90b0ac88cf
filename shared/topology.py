"""Which durable queue each service consumes, and what it is bound to.

Every service declares the whole topology at start-up (declarations are idempotent), so a
service's queue exists, and keeps messages, even while that service is down. This is what
lets keysvc's confirmed publish of `key.released` mean "durably queued for audit".
"""

from __future__ import annotations

# Events are published to EVENTS_EXCHANGE. The audit queue binds there ("#"); so does
# DELIVERY_EXCHANGE (an exchange-to-exchange binding, "#"), where every other queue binds. So an
# event reaches the audit queue once, and a publish straight to DELIVERY_EXCHANGE reaches every
# consumer but auditsvc: what `publish_audited` does after queueing an event for audit alone.
EVENTS_EXCHANGE = "events"
DELIVERY_EXCHANGE = "events.delivery"
RPC_EXCHANGE = "rpc"
DEAD_LETTER_EXCHANGE = "dead-letter"
DEAD_LETTER_QUEUE = "dead-letters"

# The services that own queues; each name is its work queue and its routing key on RPC_EXCHANGE.
POLICY_SERVICE = "policysvc"
KEY_SERVICE = "keysvc"
AUDIT_SERVICE = "auditsvc"

# Work queues: one durable quorum queue per service, bound to the events it acts on.
SERVICE_BINDINGS: dict[str, tuple[str, ...]] = {
    # device events keep policysvc's own device projection (groups from enrollment, revocation)
    POLICY_SERVICE: ("key.requested", "device.enrolled", "device.revoked"),
    # denials and approvals go to the gateway, not here; an offboarded tenant's keys are shredded here
    KEY_SERVICE: ("key.decided.allow", "tenant.offboarded"),
    AUDIT_SERVICE: ("#",),
}

# Services that answer requests, each from its own durable queue (see `rpc_queue`).
RPC_SERVICES = (KEY_SERVICE, POLICY_SERVICE, AUDIT_SERVICE)


def rpc_queue(service: str) -> str:
    """The queue a service's request/reply methods are served from."""
    return f"{service}.rpc"

# A poison message is dead-lettered after this many deliveries instead of looping forever.
DELIVERY_LIMIT = 10

# The audit queue refuses publishes (publisher nack) rather than drop records when full,
# so a release fails closed instead of happening unaudited.
AUDIT_MAX_LENGTH = 5_000_000

# Every exchange and durable queue a deployment declares, by short name (the bus prefixes each):
# what `strongroom admin teardown` removes. Exchanges are listed bindings-first (delivery before events).
EXCHANGES = (DELIVERY_EXCHANGE, EVENTS_EXCHANGE, RPC_EXCHANGE, DEAD_LETTER_EXCHANGE)


def durable_queues() -> tuple[str, ...]:
    return (DEAD_LETTER_QUEUE, *SERVICE_BINDINGS, *map(rpc_queue, RPC_SERVICES))
