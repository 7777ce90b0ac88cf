"""Seeing it: every service's liveness, readiness and Prometheus metrics, scraped over real HTTP
from a running stack (the gateway on its own port, the other three on their health listeners).
A release moves the release and decision counters; a denial moves the denials by reason class;
a sealed keysvc and a store that stops answering make readiness 503 naming them."""

from __future__ import annotations

import asyncio

import aiohttp
import pytest
from prometheus_client.parser import text_string_to_metric_families

from services.keysvc import app as keysvc
from services.keysvc.settings import KeySettings
from services.policysvc import app as policysvc
from services.policysvc.settings import PolicySettings
from shared.embedded_mongo import EmbeddedMongo
from shared.store import connect_with

from .helpers import EU_FACTS, BareAgent, make_tenant
from .processes import store_paused

LISTENER = {"health_port": 0}
BUS_SERVICES = ("policysvc", "keysvc", "auditsvc")


async def fetch(http, url: str) -> tuple[int, str, str]:
    async with http.get(url) as resp:
        return resp.status, await resp.text(), resp.headers.get("Content-Type", "")


async def samples(http, url: str) -> dict[tuple[str, frozenset], float]:
    status, text, ctype = await fetch(http, url)
    assert status == 200 and ctype.startswith("text/plain"), (status, ctype)
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(found: dict, metric: str, /, **labels: str) -> float:
    return found.get((metric, frozenset(labels.items())), 0.0)


def total(found: dict, metric: str, /, **labels: str) -> float:
    """The sum over every series of `metric` whose labels include `labels`."""
    return sum(v for (n, ls), v in found.items() if n == metric and set(labels.items()) <= set(ls))


@pytest.mark.stack(policysvc=LISTENER, keysvc=LISTENER, audit=LISTENER)
async def test_every_service_is_live_ready_and_counts_a_release(stack, api, http):
    urls = {name: stack.running[name].health_url for name in BUS_SERVICES}
    urls["gateway"] = stack.url + "/v1"
    checked = {}
    for name, url in urls.items():
        assert (await fetch(http, f"{url}/live"))[0] == 200, name
        async with http.get(f"{url}/ready") as resp:
            body = await resp.json()
            assert resp.status == 200 and body["status"] == "ready" and body["failing"] == {}, (name, body)
            assert body["service"] == name
            checked[name] = set(body["checked"])
    assert checked == {"gateway": {"store", "bus"}, "policysvc": {"store", "bus"}, "keysvc": {"store", "bus", "sealed"},
                       "auditsvc": {"store", "bus", "audit_lag"}}

    metrics = {name: url.removesuffix("/v1") + "/metrics" for name, url in urls.items()}
    before = {name: await samples(http, url) for name, url in metrics.items()}
    tenant = await make_tenant(api)
    agent = await BareAgent.enroll(tenant, api)
    status, out = (await agent.request(tenant.key_id, EU_FACTS))[:2]
    assert status == 200, out
    # Outside the EU: no rule of the tenant's policy matches, so it is denied by default.
    status, out = (await agent.request(tenant.key_id, {"identity": {"region": "us-east-1"},
                                                        "integrity": {"firewall_enabled": True}}))[:2]
    assert status == 403, out
    async with http.get(stack.url + "/v1/keys", headers={"Authorization": "Bearer sr_not_a_token"}) as resp:
        assert resp.status == 401
    # The agent may hear its answer a moment before a service counts what it published (it counts
    # once the broker confirmed) or times the handler that answered: scrape until the release shows.
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        after = {name: await samples(http, url) for name, url in metrics.items()}
        counted = (value(after["keysvc"], "strongroom_releases_total") >= 1,
                   total(after["policysvc"], "strongroom_decisions_total") >= 2,
                   value(after["gateway"], "strongroom_handler_seconds_count", kind="listen", name="key.released") >= 1)
        if all(counted) or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.1)

    key, policy, gateway, audit = after["keysvc"], after["policysvc"], after["gateway"], after["auditsvc"]
    assert value(key, "strongroom_releases_total") == value(before["keysvc"], "strongroom_releases_total") + 1
    assert value(key, "strongroom_sealed") == 0.0
    assert value(policy, "strongroom_decisions_total", effect="allow") == 1 + value(
        before["policysvc"], "strongroom_decisions_total", effect="allow")
    assert value(policy, "strongroom_denials_total", stage="policy", reason="no_rule_matched") == 1 + value(
        before["policysvc"], "strongroom_denials_total", stage="policy", reason="no_rule_matched")
    assert value(gateway, "strongroom_denials_total", stage="authentication", reason="credential") == 1 + value(
        before["gateway"], "strongroom_denials_total", stage="authentication", reason="credential")
    # Each hop: policysvc and keysvc timed the events they handled and how long the broker held them.
    assert value(policy, "strongroom_handler_seconds_count", kind="work", name="key.requested") >= 2
    assert value(key, "strongroom_handler_seconds_count", kind="work", name="key.decided") >= 1
    assert value(key, "strongroom_event_age_seconds_count", type="key.decided") >= 1
    assert value(gateway, "strongroom_handler_seconds_count", kind="http", name="POST /v1/agent/key-requests") >= 2
    assert value(gateway, "strongroom_handler_seconds_count", kind="listen", name="key.released") >= 1
    # Store commands, timed per service by PyMongo command monitoring, each into its own registry.
    for name, found in after.items():
        assert total(found, "strongroom_store_operation_seconds_count", outcome="ok") > 0, name
    assert total(key, "strongroom_store_operation_seconds_count", command="insert") > total(
        before["keysvc"], "strongroom_store_operation_seconds_count", command="insert")
    for name in BUS_SERVICES:
        assert after[name][("strongroom_queue_depth", frozenset())] >= 0, name
    assert ("strongroom_queue_depth", frozenset()) not in gateway  # it has no work queue
    assert ("strongroom_audit_lag_seconds", frozenset()) in audit
    assert ("strongroom_forwarder_lag_seconds", frozenset()) in audit
    # No metric of one service appears in another's registry.
    assert ("strongroom_sealed", frozenset()) not in policy and ("strongroom_audit_lag_seconds", frozenset()) not in key


async def test_a_sealed_keysvc_is_live_but_not_ready(rabbit_bus, mongo_client, db_prefix, prefix, tmp_path, http):
    """No root key and no custody set up: custody is sealed, so keysvc says it is not ready, why."""
    settings = KeySettings(db_prefix=db_prefix, bus_prefix=f"{prefix}.", health_port=0,
                           signing_key_file=str(tmp_path / "keysvc-signing-key.pem"))
    running = await keysvc.start(settings, bus=rabbit_bus, client=mongo_client, root_key=None)
    try:
        assert (await fetch(http, running.health_url + "/live"))[0] == 200
        async with http.get(running.health_url + "/ready") as resp:
            body = await resp.json()
            assert resp.status == 503 and resp.headers["Retry-After"], body
        assert body["status"] == "not_ready" and list(body["failing"]) == ["sealed"], body
        assert "unseal" in body["failing"]["sealed"]
        assert value(await samples(http, running.health_url + "/metrics"), "strongroom_sealed") == 1.0
    finally:
        await running.stop()
    with pytest.raises(aiohttp.ClientConnectionError):  # the listener stops with the service
        await fetch(http, running.health_url + "/live")


async def test_a_store_that_stops_answering_makes_readiness_name_the_store(rabbit_bus, prefix, http):
    """policysvc on a store process of its own: ready; the store hangs (its process paused); 503
    naming the store, alive all the same; the store is back; ready again."""
    server = EmbeddedMongo(":memory:").start()
    settings = PolicySettings(bus_prefix=f"{prefix}.", health_port=0, store_timeout_seconds=1.0,
                              store_operation_timeout_seconds=2.0)
    client = connect_with(server.url, settings)
    running = await policysvc.start(settings, bus=rabbit_bus, client=client)
    try:
        async with http.get(running.health_url + "/ready") as resp:
            assert resp.status == 200, await resp.text()
        async with store_paused(server.pid):
            async with http.get(running.health_url + "/ready") as resp:
                body = await resp.json()
            assert resp.status == 503 and list(body["failing"]) == ["store"], body
            assert "1 s" in body["failing"]["store"]
            assert (await fetch(http, running.health_url + "/live"))[0] == 200
        async with http.get(running.health_url + "/ready") as resp:
            assert resp.status == 200, await resp.text()
    finally:
        await running.stop()
        await client.close()
        server.stop()
