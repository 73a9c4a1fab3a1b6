"""kombu's Redis transport, with one Redis client per channel instead of one per command.

kombu's Redis channel builds a new `redis.Redis` object for every publish, ack and unacked-set
update (`Channel.conn_or_acquire`), and redis-py's constructor copies its table of ~200 response
callbacks each time: ~10% of a web worker's CPU when agents queue tool calls, ~14% of a worker's
(decision 0046). The client wraps the channel's connection pool and holds no connection of its
own, so one per channel is as safe to share as the pool; everything else is kombu's.
Selected by `CELERY_BROKER_TRANSPORT` when REDIS_URL is set.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from kombu.transport import redis


class Channel(redis.Channel):
    _shared: tuple[Any, Any] = (None, None)  # (the pool, a client on it)

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client:
            yield client
            return
        pool, shared = self._shared
        if pool is not self.pool:  # first use, or kombu replaced the pool (a reconnect)
            pool, shared = self.pool, self._create_client()
            self._shared = (pool, shared)
        yield shared


class Transport(redis.Transport):
    Channel = Channel
