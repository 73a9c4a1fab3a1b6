"""Run leases: at most one holder at a time writes a run's database, with a fencing token.

Two backends behind one interface (`leases()` picks by `REDIS_URL`):
- Redis: redis-py's `Lock` (SET NX PX with a random token, Lua compare-and-delete on release)
  with a TTL, plus a per-run counter (`INCR`) that hands each new holder a higher fencing token.
  A holder that stalls past its TTL (GC pause, SIGSTOP, partition) can be replaced; its late
  commit is refused by the run database, which keeps the highest token that has written
  (`runs_runinfo.fence`, checked in every write transaction: see `runs.writer`).
- Embedded (no Redis): an OS lock (`flock`) on a file beside the run database. It has no TTL and
  dies with its process, so it cannot be lost while held; the fencing token is then kept in the
  run database alone (`fence + 1` in the writing transaction).
"""

import fcntl
import functools
import os
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import redis
from django.conf import settings

from project.exceptions import DependencyUnavailable
from runs.exceptions import RunBusy

# How often a waiter asks again for a lease another process holds (redis-py polls, so does flock).
POLL_S = 0.001


def _always() -> bool:
    return True


@dataclass
class Lease:
    """A held lease. `token` is the fencing token (None: take the database's next one);
    `confirm()` renews the TTL and tells whether the lease is still this holder's."""

    run_id: str
    token: int | None
    confirm: Callable[[], bool] = _always


class Leases(Protocol):
    def hold(self, run_id: str, *, path: Path, wait_s: float) -> AbstractContextManager[Lease]: ...

    def raise_fence(self, run_id: str, *, above: int) -> int: ...


class RedisLeases:
    """Leases in Redis: a lock with a TTL per run and a fencing counter per run."""

    def __init__(self, url: str):
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )
        # Set the counter above a floor and return the next token, in one atomic step.
        self._raise = self._client.register_script(
            "local v = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if v <= tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end "
            "return redis.call('INCR', KEYS[1])"
        )

    @contextmanager
    def hold(self, run_id: str, *, path: Path, wait_s: float) -> Iterator[Lease]:
        lock = self._client.lock(
            f"agentdb:lease:{run_id}",
            timeout=settings.RUN_LEASE_TTL_S,
            sleep=POLL_S,
            blocking_timeout=wait_s,
            thread_local=False,
        )
        try:
            if not lock.acquire():
                raise RunBusy(
                    f"Run {run_id} is being written by another process; retry shortly.",
                    retry_after=1,
                )
            try:
                token = int(self._client.incr(_fence_key(run_id)))
            except BaseException:
                _release_quietly(lock)
                raise
        except redis.RedisError as exc:
            raise DependencyUnavailable(
                f"Redis is unreachable ({type(exc).__name__}); nothing was written. Retry.",
                retry_after=1,
            ) from exc
        try:
            yield Lease(run_id, token, functools.partial(_confirm, lock))
        finally:
            _release_quietly(lock)

    def raise_fence(self, run_id: str, *, above: int) -> int:
        """Return a new token above `above` (Redis lost its counter, e.g. restarted empty)."""
        try:
            return int(self._raise(keys=[_fence_key(run_id)], args=[above]))
        except redis.RedisError as exc:
            raise DependencyUnavailable(
                f"Redis is unreachable ({type(exc).__name__}); retry.", retry_after=1
            ) from exc


def _fence_key(run_id: str) -> str:
    return f"agentdb:fence:{run_id}"


def _confirm(lock: redis.lock.Lock) -> bool:
    """Reset the lease's TTL if this holder still owns it; False once it expired or moved."""
    try:
        lock.reacquire()
    except redis.exceptions.LockNotOwnedError:
        return False
    except redis.RedisError as exc:
        raise DependencyUnavailable(
            f"Redis is unreachable ({type(exc).__name__}); nothing was written. Retry.",
            retry_after=1,
        ) from exc
    return True


def _release_quietly(lock: redis.lock.Lock) -> None:
    # A lease that expired is no one's to release; the database's fence decided the rest.
    with suppress(redis.RedisError):
        lock.release()


class FileLeases:
    """Leases as `flock` on `<run database>.lease`: one process at a time, threads within it
    serialised by `runs.writer` (a process has one leader per run at a time)."""

    @contextmanager
    def hold(self, run_id: str, *, path: Path, wait_s: float) -> Iterator[Lease]:
        lock_path = path.with_name(path.name + ".lease")
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except FileNotFoundError:
            # The run's directory is gone: so is its database (the router reports that).
            yield Lease(run_id, None)
            return
        try:
            deadline = time.monotonic() + wait_s
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except BlockingIOError:
                    if time.monotonic() >= deadline:
                        raise RunBusy(
                            f"Run {run_id} is being written by another process; retry shortly.",
                            retry_after=1,
                        ) from None
                    time.sleep(POLL_S)
            yield Lease(run_id, None)
        finally:
            os.close(fd)  # releases the flock

    def raise_fence(self, run_id: str, *, above: int) -> int:
        return above + 1


@functools.cache
def _redis_leases(url: str) -> RedisLeases:
    return RedisLeases(url)


def leases() -> Leases:
    """Return the lease backend the settings name (read when called, so tests can switch)."""
    if settings.REDIS_URL:
        return _redis_leases(settings.REDIS_URL)
    return _FILE_LEASES


_FILE_LEASES = FileLeases()
