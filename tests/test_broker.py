"""project.broker: kombu's Redis transport with one client per channel, against the real Redis."""

import os
import subprocess
import sys
from collections.abc import Iterator

import pytest
from kombu import Connection

from project.broker import Transport

QUEUE = "test-broker-shared-client"


@pytest.fixture
def channel(redis_url: str) -> Iterator:
    with Connection(redis_url, transport=Transport) as conn:
        channel = conn.default_channel
        channel.client.delete(QUEUE)
        yield channel
        channel.client.delete(QUEUE)


def test_publishes_through_one_client(channel) -> None:
    created = []
    build = channel._create_client

    def counting(*args, **kwargs):
        created.append(1)
        return build(*args, **kwargs)

    channel._create_client = counting
    for i in range(50):
        channel._put(QUEUE, {"body": str(i)})
    assert channel._size(QUEUE) == 50  # every message is in Redis
    assert [channel._get(QUEUE)["body"] for _ in range(50)] == [str(i) for i in range(50)]
    assert len(created) == 1  # kombu's own channel builds one per command


def test_a_new_pool_gets_a_new_client(channel) -> None:
    channel._put(QUEUE, {"body": "before"})
    with channel.conn_or_acquire() as first:
        pass
    channel._pool.disconnect()
    channel._pool = None  # what kombu does when the channel's connection is reset
    channel._put(QUEUE, {"body": "after"})
    with channel.conn_or_acquire() as second:
        assert second is not first and second.connection_pool is channel.pool
    assert channel._size(QUEUE) == 2


def test_celery_uses_it_with_redis(redis_url: str) -> None:
    # Settings are read at start-up: ask a fresh process configured as a worker would be.
    code = (
        "import django; django.setup(); from project.celery import app\n"
        "with app.connection_for_write() as conn: print(type(conn.transport).__module__)"
    )
    env = {**os.environ, "REDIS_URL": redis_url, "DJANGO_SETTINGS_MODULE": "project.settings"}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == "project.broker"


def test_replies_are_parsed_by_hiredis(channel, redis_url: str) -> None:
    # Decision 0054: the consumer thread is starved of the GIL; parsing in C spends less of it.
    from redis._parsers import _HiredisParser

    from runs.leases import RedisLeases

    clients = {"broker": channel.client, "leases": RedisLeases(redis_url)._client}
    for name, client in clients.items():
        connection = client.connection_pool.get_connection()
        try:
            assert isinstance(connection._parser, _HiredisParser), name
        finally:
            client.connection_pool.release(connection)
