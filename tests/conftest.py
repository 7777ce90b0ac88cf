"""Fixtures: the real RabbitMQ, a MongoDB-wire store, and per-test isolation of both.

The store is `MONGODB_URL` when set, else a MongoDB container when Docker is reachable,
else the embedded SecantusDB server started for the session. Each test gets its own
queue/exchange prefix and its own database prefix, so tests never see each other's data.
"""

from __future__ import annotations

import os
import uuid

import pytest
import structlog

from shared.bus import RabbitBus
from shared.bus_memory import MemoryBus
from shared.embedded_mongo import EmbeddedMongo
from shared.store import connect

AMQP_URL = os.environ.get("STRONGROOM_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


def pytest_configure(config):
    # The services run inside the test process, where nothing calls `shared.log.configure`, so
    # structlog's default console renderer drew every logged exception with rich: each frame
    # highlighted, with its locals (PyMongo's hold the whole topology). At seconds of CPU per
    # traceback, a store outage's burst of them starved the one event loop every service shares:
    # PyMongo's monitor could not finish a 3 s hello to the restarted store, so the services never
    # recovered (tests/e2e/test_store_crash.py). Plain tracebacks, as every real process logs them.
    for processor in structlog.get_config()["processors"]:
        if isinstance(processor, structlog.dev.ConsoleRenderer):
            processor.exception_formatter = structlog.dev.plain_traceback


def _docker_mongo():
    try:
        import docker

        docker.from_env().ping()
    except Exception:
        return None
    from testcontainers.mongodb import MongoDbContainer

    return MongoDbContainer("mongo:7")


class RecycledStore:
    """The embedded store, replaced by a fresh server every `every` tests that use it.

    SecantusDB's cost per operation grows with every write it has taken, dropped databases and a
    capped oplog included (measured on this box: 3 ms for an insert and a find on a fresh server,
    18 ms after 60,000 writes), so one server for a whole session made each test slower than the
    one before. Every test has its own database prefix and its own client, so a test never needs
    what an earlier one wrote: a fresh server (on a new port) between tests loses nothing."""

    def __init__(self, every: int):
        self.every, self.uses = every, 0
        self.server = EmbeddedMongo(":memory:").start()

    def url_for_next_test(self) -> str:
        if self.uses >= self.every:
            self.server.stop()
            self.server = EmbeddedMongo(":memory:").start()
            self.uses = 0
        self.uses += 1
        return self.server.url

    def stop(self) -> None:
        self.server.stop()


@pytest.fixture(scope="session")
def _store():
    """`MONGODB_URL` when set, else a MongoDB container when Docker is reachable (either serves the
    whole session), else the embedded store, recycled."""
    if url := os.environ.get("MONGODB_URL"):
        yield url
        return
    container = _docker_mongo()
    if container is not None:
        with container:
            yield container.get_connection_url()
        return
    store = RecycledStore(every=30)
    yield store
    store.stop()


@pytest.fixture
def mongo_url(_store):
    return _store if isinstance(_store, str) else _store.url_for_next_test()


@pytest.fixture(scope="session")
def amqp_url():
    return AMQP_URL


@pytest.fixture(scope="session")
def rabbit_cluster(tmp_path_factory):
    """A three-node RabbitMQ cluster of the suite's own on loopback (~20 s to boot, once a session)."""
    from .rabbit_cluster import Brokers

    brokers = Brokers(tmp_path_factory.mktemp("rabbit-cluster"), size=3)
    try:
        yield brokers.start()
    finally:
        brokers.close()


@pytest.fixture(scope="session")
def own_broker(tmp_path_factory):
    """A single RabbitMQ node of the suite's own, for tests that stop the whole broker."""
    from .rabbit_cluster import Brokers

    brokers = Brokers(tmp_path_factory.mktemp("rabbit-own"), size=1)
    try:
        yield brokers.start()
    finally:
        brokers.close()


@pytest.fixture(autouse=True)
def cli_config_dir(tmp_path_factory, monkeypatch):
    """The CLI keeps profiles (sessions) in a config directory: each test gets its own, never the user's."""
    monkeypatch.setenv("STRONGROOM_CONFIG_DIR", str(tmp_path_factory.mktemp("strongroom-config")))
    monkeypatch.delenv("STRONGROOM_PROFILE", raising=False)


@pytest.fixture
def prefix():
    return f"t{uuid.uuid4().hex[:10]}_"


@pytest.fixture
async def mongo_client(mongo_url):
    client = connect(mongo_url)
    yield client
    await client.close()


@pytest.fixture
async def db_prefix(mongo_client, prefix):
    yield prefix
    for name in await mongo_client.list_database_names():
        if name.startswith(prefix):
            await mongo_client.drop_database(name)


async def make_rabbit_bus(amqp_url: str, prefix: str) -> RabbitBus:
    bus = RabbitBus(amqp_url, prefix=prefix)
    await bus.start()
    return bus


@pytest.fixture
async def rabbit_bus(amqp_url, prefix):
    bus = await make_rabbit_bus(amqp_url, f"{prefix}.")
    yield bus
    await bus.destroy()
    await bus.close()


@pytest.fixture(params=["rabbitmq", "memory"])
async def any_bus(request, amqp_url, prefix):
    """The bus contract runs against both implementations."""
    if request.param == "memory":
        bus = MemoryBus()
        await bus.start()
        yield bus
        await bus.close()
    else:
        bus = await make_rabbit_bus(amqp_url, f"{prefix}.")
        yield bus
        await bus.destroy()
        await bus.close()
