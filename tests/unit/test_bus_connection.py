"""The bus over a list of brokers: parsing `STRONGROOM_AMQP_URL`, and moving to the next URL when
one does not answer (against the real broker, behind a port where nothing listens)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from shared.bus import RabbitBus
from shared.bus_connection import RotatingConnection, broker_urls, connect
from shared.config import CommonSettings
from shared.embedded_mongo import free_port

GOOD = "amqp://guest:guest@127.0.0.1:5672/"


def test_a_comma_separated_list_names_each_broker_in_order():
    assert broker_urls(" amqp://a:1/ ,amqp://b:2/,, amqp://c:3/ ") == ["amqp://a:1/", "amqp://b:2/", "amqp://c:3/"]
    assert broker_urls(GOOD) == [GOOD]
    with pytest.raises(ValueError, match="no broker URL"):
        broker_urls(" , ")


def test_settings_keep_the_list_and_refuse_an_empty_one():
    assert CommonSettings(amqp_url="amqp://a:1/, amqp://b:2/").amqp_url == "amqp://a:1/,amqp://b:2/"
    with pytest.raises(ValidationError, match="amqp_url"):
        CommonSettings(amqp_url=",")


async def test_each_attempt_after_the_first_goes_to_the_next_url_round_and_round():
    # async: aio-pika binds a connection to the running loop (a sync test failed once another test
    # had closed the thread's loop)
    urls = ["amqp://u:p@127.0.0.1:1/", "amqp://u:p@127.0.0.1:2/", "amqp://u:p@127.0.0.1:3/"]
    connection = RotatingConnection(urls, first=1)
    seen = [connection.url.port]
    for _ in range(4):  # what aio-pika does at the start of every (re)connection attempt
        connection.transport = None
        seen.append(connection.url.port)
    assert seen == [2, 2, 3, 1, 2]
    assert "p@" not in connection.current_url  # logs never show the password


async def test_a_broker_that_does_not_answer_is_skipped_for_the_next():
    dead = f"amqp://guest:guest@127.0.0.1:{free_port()}/"
    connection = await connect(f"{dead},{GOOD}", connection_name="rotation-test")
    try:
        assert connection.url.port == 5672 and not connection.is_closed
    finally:
        await connection.close()


async def test_the_bus_starts_on_the_first_broker_that_answers_and_refuses_when_none_does():
    bus = RabbitBus(f"amqp://guest:guest@127.0.0.1:{free_port()}/,{GOOD}", prefix="rotation-test.")
    await bus.start()
    try:
        assert bus.connected()
    finally:
        await bus.destroy()
        await bus.close()
    with pytest.raises(ConnectionError, match="no broker of 2 answered"):
        await connect(f"amqp://g:g@127.0.0.1:{free_port()}/,amqp://g:g@127.0.0.1:{free_port()}/", connection_name="x")
