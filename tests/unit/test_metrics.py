"""The pure parts of metrics and readiness: denial reason classes, the audit lag, registries that
several services share a process with, and events counted only once the broker took them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.auditsvc.handlers import IngestStats
from services.auditsvc.health import audit_lag
from shared.events import KeyDecided, KeyReleaseRefused
from shared.metrics import Metrics, StoreTimings, denial_class
from shared.observability import Probe

NOW = datetime(2026, 12, 5, 12, 0, tzinfo=UTC)


def decided(effect: str, *reasons: str) -> KeyDecided:
    return KeyDecided(tenant_id="ten_1", correlation_id="c", request_id="req_1", device_id="dev_1", key_id="key_1",
                      effect=effect, reasons=reasons, ephemeral_public_key="AAAA")


@pytest.mark.parametrize(("reasons", "expected"), [
    (("device is quarantined: integrity drift",), "quarantined"),
    (("no policy applies: denied by default",), "no_policy"),
    (("no rule matched: denied by default",), "no_rule_matched"),
    (("no rule matched: denied by default", "tpm evidence was refused (bad quote): claims were used"), "evidence_refused"),
    (("rule 'block-us' matched: deny",), "rule"),
])
def test_a_denial_is_classed_by_its_reasons(reasons, expected):
    assert denial_class(decided("deny", *reasons)) == expected


async def test_events_are_counted_once_published_and_not_when_refused():
    metrics = Metrics("policysvc")
    published = []

    async def publish(event):
        published.append(event)

    async def refuse(event):
        raise RuntimeError("the broker refused it")

    await metrics.counting(publish)(decided("deny", "no policy applies: denied by default"))
    await metrics.counting(publish)(decided("allow"))
    with pytest.raises(RuntimeError):
        await metrics.counting(refuse)(decided("allow"))
    await metrics.counting(publish)(KeyReleaseRefused(tenant_id="ten_1", correlation_id="c", request_id="req_1",
                                                      device_id="dev_1", key_id="key_1", reason="sealed", status="sealed"))
    found = {(s.name, tuple(sorted(s.labels.items()))): s.value
             for f in text_string_to_metric_families((await metrics.exposition()).decode()) for s in f.samples}
    assert found[("strongroom_decisions_total", (("effect", "allow"),))] == 1
    assert found[("strongroom_decisions_total", (("effect", "deny"),))] == 1
    assert found[("strongroom_denials_total", (("reason", "no_policy"), ("stage", "policy")))] == 1
    assert found[("strongroom_denials_total", (("reason", "sealed"), ("stage", "custody")))] == 1
    assert len(published) == 3


async def test_services_in_one_process_keep_their_own_registries():
    key, policy = Metrics("keysvc"), Metrics("policysvc")  # the same names, no clash
    sealed = True
    key.gauge("strongroom_sealed", "1 while sealed", lambda: float(sealed))
    key.releases.inc()
    assert b"strongroom_sealed 1.0" in await key.exposition()
    assert b"strongroom_releases_total 1.0" in await key.exposition()
    assert b"strongroom_sealed" not in await policy.exposition()
    assert b"strongroom_releases_total 0.0" in await policy.exposition()


async def test_readiness_names_every_failing_check():
    async def fine():
        return None

    async def sealed():
        return "key custody is sealed"

    ok, body = await Probe("keysvc", Metrics("keysvc"), {"store": fine, "bus": fine, "sealed": sealed}).readiness()
    assert not ok and body == {"service": "keysvc", "status": "not_ready", "checked": ["store", "bus", "sealed"],
                               "failing": {"sealed": "key custody is sealed"}}
    assert (await Probe("keysvc", Metrics("keysvc"), {"store": fine}).readiness())[0]

    async def broken():
        raise ConnectionResetError("peer gone")

    ok, body = await Probe("policysvc", Metrics("policysvc"), {"store": fine, "bus": broken}).readiness()
    assert not ok and body["failing"] == {"bus": "the check failed (ConnectionResetError)"}


def test_audit_lag_is_none_while_nothing_waits_and_grows_while_ingestion_is_stuck():
    stats = IngestStats()
    started = NOW - timedelta(seconds=300)
    assert audit_lag(0, stats, since=started, now=NOW) == 0.0
    assert audit_lag(None, stats, since=started, now=NOW) == 0.0  # the broker check reports that
    assert audit_lag(5, stats, since=started, now=NOW) == 300.0  # waiting, and no batch taken since the start
    stats.last_at, stats.last_lag_seconds = NOW - timedelta(seconds=2), 0.5
    assert audit_lag(5, stats, since=started, now=NOW) == 2.0
    stats.last_at, stats.last_lag_seconds = NOW, 45.0  # taken just now, but its oldest event had waited
    assert audit_lag(5, stats, since=started, now=NOW) == 45.0


def test_store_commands_are_timed_into_the_registry_of_the_database_they_touched():
    class Done:
        def __init__(self, database: str):
            self.database_name, self.command_name, self.duration_micros = database, "find", 1500

    timings, old, new = StoreTimings(), Metrics("keysvc"), Metrics("keysvc")
    timings.watch("strongroom_keysvc", old)
    timings.watch("strongroom_keysvc", new)  # a second instance started in the same process
    timings.forget("strongroom_keysvc", old)  # the first one stops: the second keeps its timings
    timings.succeeded(Done("strongroom_keysvc"))  # type: ignore[arg-type]
    timings.failed(Done("strongroom_policysvc"))  # type: ignore[arg-type]  # nobody's here
    labels = {"command": "find", "outcome": "ok"}
    assert new.registry.get_sample_value("strongroom_store_operation_seconds_sum", labels) == pytest.approx(0.0015)
    assert old.registry.get_sample_value("strongroom_store_operation_seconds_sum", labels) is None
