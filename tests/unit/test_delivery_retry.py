"""A handler whose dependency is away for now (the broker failing over, the store restarting) is
retried with its message held, not requeued: each requeue counts towards the queue's delivery
limit, and a failover of seconds must not dead-letter events that were never poison."""

from __future__ import annotations

from pymongo.errors import AutoReconnect

from shared.bus import BusError
from shared.delivery import handle_one
from shared.events import KeyRequested, encode_event


class Recorded:
    def __init__(self):
        event = KeyRequested(tenant_id="ten_a", request_id="r1", device_id="dev_1", key_id="key_1", facts={},
                             ephemeral_public_key="AA==")
        self.body, self.routing_key, self.settled = encode_event(event), event.routing_key, []

    async def ack(self):
        self.settled.append("ack")

    async def ack_through(self):
        self.settled.append("ack_through")

    async def requeue(self):
        self.settled.append("requeue")

    async def dead_letter(self, reason: str):
        self.settled.append("dead_letter")


def failing(*errors):
    calls = []

    async def handler(event):
        calls.append(event.event_id)
        if len(calls) <= len(errors):
            raise errors[len(calls) - 1]

    return handler, calls


async def test_a_broker_or_store_away_is_retried_in_place_then_acked_once():
    delivery = Recorded()
    handler, calls = failing(BusError("publish failed"), AutoReconnect("store restarting"))
    await handle_one(delivery, handler)
    assert len(calls) == 3 and delivery.settled == ["ack"]


async def test_any_other_failure_is_requeued_at_once():
    delivery = Recorded()
    handler, calls = failing(ValueError("a bug"))
    await handle_one(delivery, handler)
    assert len(calls) == 1 and delivery.settled == ["requeue"]


async def test_retrying_in_place_gives_up_and_requeues_after_its_bound(monkeypatch):
    monkeypatch.setattr("shared.delivery.RETRY_IN_PLACE_SECONDS", 0.25)
    delivery = Recorded()
    handler, calls = failing(*[BusError("away")] * 100)
    await handle_one(delivery, handler)
    assert 2 <= len(calls) < 100 and delivery.settled == ["requeue"]
