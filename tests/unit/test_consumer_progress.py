"""Consumer progress bookkeeping: what counts as stalled, with a clock the test moves."""

from __future__ import annotations

from shared.progress import ConsumerProgress


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_an_idle_consumer_with_an_empty_queue_is_never_stalled():
    clock = Clock()
    p = ConsumerProgress("audit", clock=clock)
    clock.now += 3600
    assert p.check(ready=0, after=60) == (False, False)


def test_deliveries_held_without_settling_stall_after_the_bound_and_resume_on_progress():
    clock = Clock()
    p = ConsumerProgress("audit", clock=clock)
    clock.now += 500  # long idle before: the wait counts from when it got busy, not from the last ack
    first = p.received()
    p.received()
    clock.now += 59
    assert p.check(ready=0, after=60) == (False, False)
    clock.now += 2
    assert p.check(ready=0, after=60) == (True, True)
    assert p.check(ready=0, after=60) == (True, False)  # reported once per episode
    p.settled(first)
    assert p.check(ready=0, after=60) == (False, True)
    assert p.outstanding == 1


def test_a_requeue_is_not_progress():
    clock = Clock()
    p = ConsumerProgress("policysvc", clock=clock)
    for _ in range(5):  # a handler failing on every delivery: requeued, redelivered, requeued...
        p.settled(p.received(), progressed=False)
        clock.now += 20
    # Nothing outstanding at this instant, but the queue holds the message and nothing gets done.
    assert p.check(ready=1, after=60)[0] is False  # first seen ready now
    clock.now += 61
    assert p.check(ready=1, after=60)[0] is True


def test_a_cumulative_ack_settles_the_batch_up_to_it_and_not_the_next():
    clock = Clock()
    p = ConsumerProgress("audit", clock=clock)
    batch = [p.received() for _ in range(3)]
    following = p.received()
    p.settled(batch[-1], through=True)
    assert p.outstanding == 1
    p.settled(following, through=True)
    assert p.outstanding == 0


def test_ready_messages_that_never_arrive_stall_a_consumer_the_broker_stopped_feeding():
    clock = Clock()
    p = ConsumerProgress("keysvc", clock=clock)
    p.settled(p.received())
    clock.now += 61
    assert p.check(ready=0, after=60)[0] is False
    assert p.check(ready=7, after=60)[0] is False  # a message may have just arrived
    clock.now += 61
    assert p.check(ready=7, after=60)[0] is True
