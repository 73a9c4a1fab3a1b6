"""The node-wide rollout lock: one schema migration at a time on the databases of a node.

`migrate_tenants` holds it for the whole rollout; a request that finds its database behind the
code's schema takes it for the one database it migrates on open (`tenancy.gate`). With
`REDIS_URL` set it is a redis-py `Lock` named after `HOME_NODE` (its token says who holds it, its
timeout is renewed while the rollout makes progress); without Redis it is an OS file lock in
`DATA_DIR` (released by the kernel when the holder dies) with a side file saying who holds it.
"""

import os
import socket
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

from django.conf import settings
from django.utils import timezone

from tenancy.exceptions import RolloutLocked
from tenancy.ids import new_id


def _holder(purpose: str) -> str:
    started = timezone.now().isoformat(timespec="seconds")
    return (
        f"{purpose}, pid {os.getpid()} on {socket.gethostname()} since {started} [{new_id('lock')}]"
    )


def lock_path() -> Path:
    return Path(settings.DATA_DIR) / "locks" / "rollout.lock"


@contextmanager
def rollout_lock(*, purpose: str, wait_s: float) -> Iterator[Callable[[], None]]:
    """Hold this node's rollout lock for the block; yield a keep-alive to call on progress.

    Waits at most `wait_s` seconds, then raises `RolloutLocked` naming the holder.
    """
    holder = _holder(purpose)
    if settings.REDIS_URL:
        with _redis_lock(holder, wait_s) as keep_alive:
            yield keep_alive
    else:
        with _file_lock(holder, wait_s) as keep_alive:
            yield keep_alive


@contextmanager
def _redis_lock(holder: str, wait_s: float) -> Iterator[Callable[[], None]]:
    import redis
    from redis.exceptions import LockError

    client = redis.Redis.from_url(
        settings.REDIS_URL,
        socket_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
        socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
    )
    name = f"agentdb:rollout:{settings.HOME_NODE}"
    ttl = settings.TENANCY_ROLLOUT_LOCK_TTL_S
    lock = client.lock(name, timeout=ttl, blocking_timeout=wait_s, thread_local=False)
    if not lock.acquire(token=holder.encode()):
        current = client.get(name)
        if isinstance(current, bytes):
            current = current.decode()
        raise RolloutLocked(current or "a holder that just left", wait_s)
    renewed = time.monotonic()

    def keep_alive() -> None:
        nonlocal renewed
        if time.monotonic() - renewed > ttl / 4:
            lock.reacquire()
            renewed = time.monotonic()

    try:
        yield keep_alive
    finally:
        with suppress(LockError):  # expired: somebody may hold it now, never release theirs
            lock.release()
        client.close()


@contextmanager
def _file_lock(holder: str, wait_s: float) -> Iterator[Callable[[], None]]:
    from filelock import FileLock, Timeout

    path = lock_path()
    path.parent.mkdir(parents=True, exist_ok=True)
    who = path.with_name(path.name + ".holder")
    lock = FileLock(path, timeout=wait_s, thread_local=False)
    try:
        lock.acquire()
    except Timeout:
        try:
            current = who.read_text().strip()
        except OSError:
            current = ""
        raise RolloutLocked(current or "another process", wait_s) from None
    try:
        who.write_text(holder + "\n")
        yield lambda: None
    finally:
        with suppress(OSError):
            who.write_text("")
        lock.release()
