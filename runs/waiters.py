"""Long polls of async tool calls: a request waits on a `threading.Event`, not in a sleep loop.

Whoever records a final status (a worker, a cancel) calls `notify(run_id, seq)` (or
`notify_many` for several calls of a run) after the commit. With REDIS_URL that is a Redis
PUBLISH, and one listener thread per process (started by the first waiter) wakes the waiting
requests of that process; embedded, the notification is local (the worker pool is in the same
process). A waiter registers before it reads the
call, so a notification between the read and the wait is not lost; a listener that loses its
connection wakes every waiter (they read again) before it reconnects.
"""

import contextlib
import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Iterator

import redis
from django.conf import settings

logger = logging.getLogger(__name__)

CHANNEL = "agentdb:tool-calls:done"


class Hub:
    """This process's waiting requests, by (run id, seq)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiters: dict[tuple[str, int], set[threading.Event]] = defaultdict(set)
        self._count = 0
        self._listener: threading.Thread | None = None
        self._watchers: list[Callable[[str, int], None]] = []

    @contextlib.contextmanager
    def waiting(self, run_id: str, seq: int) -> Iterator[threading.Event | None]:
        """Register a waiter for the block; None when TOOL_CALL_WAITERS_PER_PROCESS are
        already waiting (the caller answers at once instead)."""
        event = threading.Event()
        key = (run_id, seq)
        with self._lock:
            full = self._count >= settings.TOOL_CALL_WAITERS_PER_PROCESS
            if not full:
                self._count += 1
                self._waiters[key].add(event)
        if full:
            yield None
            return
        try:
            if settings.REDIS_URL:
                self._ensure_listener()
            yield event
        finally:
            with self._lock:
                self._count -= 1
                self._waiters[key].discard(event)
                if not self._waiters[key]:
                    del self._waiters[key]

    def watch(self, callback: Callable[[str, int], None]) -> None:
        """Call `callback(run_id, seq)` on every notification this process receives, from now
        on (a worker stops its own run of a call cancelled elsewhere). Needs REDIS_URL."""
        with self._lock:
            self._watchers.append(callback)
        self._ensure_listener()

    def wake(self, run_id: str, seq: int) -> None:
        with self._lock:
            for event in self._waiters.get((run_id, seq), ()):
                event.set()
            watchers = list(self._watchers)
        for callback in watchers:
            callback(run_id, seq)

    def wake_all(self) -> None:
        with self._lock:
            for events in self._waiters.values():
                for event in events:
                    event.set()

    def _ensure_listener(self) -> None:
        with self._lock:
            if self._listener is not None and self._listener.is_alive():
                return
            ready = threading.Event()
            self._listener = threading.Thread(
                target=self._listen, args=(ready,), name="tool-call-waiters", daemon=True
            )
            self._listener.start()
        # Subscribed before the waiter reads the call: a notification cannot slip between.
        ready.wait(settings.REDIS_SOCKET_TIMEOUT_S)

    def _listen(self, ready: threading.Event) -> None:
        backoff = threading.Event()
        while True:
            try:
                client = redis.Redis.from_url(settings.REDIS_URL, health_check_interval=30)
                pubsub = client.pubsub(ignore_subscribe_messages=True)
                pubsub.subscribe(CHANNEL)
                ready.set()
                for message in pubsub.listen():
                    run_id, _, seqs = message["data"].decode().partition(":")
                    for seq in seqs.split(","):
                        if seq.isdigit():
                            self.wake(run_id, int(seq))
            except Exception:
                logger.warning("tool-call notifications lost their Redis connection; reconnecting")
            ready.set()
            self.wake_all()
            backoff.wait(1.0)  # this listener thread only, never a request's


hub = Hub()


@functools.cache
def redis_client(url: str) -> redis.Redis:
    """This process's client for one-shot commands of the queue (outcome notifications),
    bounded by REDIS_SOCKET_TIMEOUT_S."""
    return redis.Redis.from_url(
        url,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
    )


def notify(run_id: str, seq: int) -> None:
    """Wake whoever waits for tool call `seq` of `run_id`, in every process (after a commit)."""
    notify_many(run_id, [seq])


def notify_many(run_id: str, seqs: list[int]) -> None:
    """`notify` for several calls of one run: one message `<run id>:<seq>,<seq>,...`."""
    if not seqs:
        return
    if not settings.REDIS_URL:
        for seq in seqs:
            hub.wake(run_id, seq)
        return
    try:
        redis_client(settings.REDIS_URL).publish(CHANNEL, f"{run_id}:{','.join(map(str, seqs))}")
    except redis.RedisError:
        # Waiters then answer at the end of their wait with the status they read again.
        logger.warning("could not publish the outcome of tool calls %s of run %s", seqs, run_id)
