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
from typing import Any, Protocol

import redis
from django.conf import settings

from project.exceptions import DependencyUnavailable
from runs.exceptions import RunBusy

# How often a waiter asks again for a lease another process holds (flock is polled). A Redis
# waiter is woken by the holder's release instead, and asks at least every WAKE_S (a holder
# that died wakes nobody: its TTL frees the lease).
POLL_S = 0.001
WAKE_S = 0.05


def _always(*, ask: bool = False) -> bool:
    return True


@dataclass
class Lease:
    """A held lease. `token` is the fencing token (None: take the database's next one);
    `confirm()` renews the TTL and tells whether the lease is still this holder's (`ask=True`:
    always ask the lease's store, never the local clock)."""

    run_id: str
    token: int | None
    confirm: Callable[..., bool] = _always


class Leases(Protocol):
    def hold(self, run_id: str, *, path: Path, wait_s: float) -> AbstractContextManager[Lease]: ...

    def raise_fence(self, run_id: str, *, above: int) -> int: ...


class FencedLock(redis.lock.Lock):
    """redis-py's `Lock` (token, TTL, compare-and-delete release) whose acquisition also takes
    the run's next fencing token, in the same round trip, and whose waiters are woken by the
    release instead of polling.

    The release pushes one wake-up onto the run's wake list (`BLPOP`ed by a waiter, at most
    one kept, expiring with the lease's TTL). redis-py's own acquire polls: every waiter asked
    Redis every `POLL_S`, and the lease changed hands up to a poll (plus a GIL hand-off) after
    its release; with two processes writing one run about a fifth of the CPU stayed idle
    (decision 0049). `BLPOP` with a fractional timeout needs Redis 6 or later.
    """

    ACQUIRE = (
        "if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then "
        "return redis.call('INCR', KEYS[2]) end return 0"
    )
    RELEASE = (
        "if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end "
        "redis.call('DEL', KEYS[1], KEYS[2]) redis.call('RPUSH', KEYS[2], 1) "
        "redis.call('PEXPIRE', KEYS[2], ARGV[2]) return 1"
    )
    fence = 0
    acquired_at = 0.0

    def __init__(self, client: redis.Redis, name: str, **kwargs: Any):
        super().__init__(client, name, **kwargs)
        self._acquire_script = _scripts(client).acquire
        self._release_script = _scripts(client).release
        self._wake = _wake_key_of(name)

    def acquire(
        self,
        sleep: Any = None,
        blocking: bool | None = None,
        blocking_timeout: Any = None,
        token: Any = None,
    ) -> bool:
        """Take the lease within `blocking_timeout` seconds (the lock's own by default; None or
        `blocking=False`: one attempt, never an unbounded wait)."""
        # Random, not redis-py's uuid1: libuuid asks a uuidd socket for every uuid1 (3 syscalls).
        token = (
            os.urandom(16).hex().encode()
            if token is None
            else self.redis.get_encoder().encode(token)
        )
        wait_s = self.blocking_timeout if blocking_timeout is None else blocking_timeout
        if blocking is False or (blocking is None and not self.blocking):
            wait_s = 0
        deadline = time.monotonic() + float(wait_s or 0)
        # A BLPOP must answer within the client's socket timeout, or it reads as Redis down.
        socket_timeout = self.redis.connection_pool.connection_kwargs.get("socket_timeout")
        longest = WAKE_S if not socket_timeout else min(WAKE_S, socket_timeout / 2)
        while True:
            if self.do_acquire(token):
                self.local.token = token
                return True
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return False
            self.redis.blpop([self._wake], timeout=round(max(0.001, min(remaining, longest)), 3))

    def do_release(self, expected_token: str) -> None:
        assert self.timeout is not None
        released = self._release_script(
            keys=[self.name, self._wake], args=[expected_token, int(self.timeout * 1000)]
        )
        if not released:
            raise redis.exceptions.LockNotOwnedError(
                "Cannot release a lock that's no longer owned", lock_name=self.name
            )

    def do_acquire(self, token: str) -> bool:
        assert self.timeout is not None
        # Stamped before the request: a holder that stalls before reading the reply must not
        # believe its lease younger than it is (`confirm` trusts this clock).
        sent_at = time.monotonic()
        fence = self._acquire_script(
            keys=[self.name, _fence_key_of(self.name)], args=[token, int(self.timeout * 1000)]
        )
        if not fence:
            return False
        self.fence, self.acquired_at = int(fence), sent_at
        return True

    def confirm(self, *, ask: bool = False) -> bool:
        """Tell whether the lease is still this holder's, renewing its TTL when half is gone.

        Within half the TTL of acquiring or renewing (measured on the monotonic clock, which
        keeps counting while a process is stopped) the lease cannot have expired in Redis, so
        no round trip is needed; past it, `reacquire` renews it or reports it lost.
        """
        assert self.timeout is not None
        sent_at = time.monotonic()
        if not ask and sent_at - self.acquired_at < self.timeout / 2:
            return True
        try:
            self.reacquire()
        except redis.exceptions.LockNotOwnedError:
            return False
        except redis.RedisError as exc:
            raise _unreachable(exc) from exc
        self.acquired_at = sent_at
        return True


class RedisLeases:
    """Leases in Redis: a `FencedLock` with a TTL per run and a fencing counter per run."""

    def __init__(self, url: str):
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
            socket_connect_timeout=settings.REDIS_SOCKET_TIMEOUT_S,
            health_check_interval=30,
        )

    @contextmanager
    def hold(self, run_id: str, *, path: Path, wait_s: float) -> Iterator[Lease]:
        lock = FencedLock(
            self._client,
            _lease_key(run_id),
            timeout=settings.RUN_LEASE_TTL_S,
            blocking_timeout=wait_s,
            thread_local=False,
        )
        try:
            acquired = lock.acquire()
        except redis.RedisError as exc:
            raise _unreachable(exc) from exc
        if not acquired:
            raise RunBusy(
                f"Run {run_id} is being written by another process; retry shortly.",
                retry_after=1,
            )
        try:
            yield Lease(run_id, lock.fence, lock.confirm)
        finally:
            # A lease that expired is no one's to release; the database's fence decided.
            with suppress(redis.RedisError):
                lock.release()

    def raise_fence(self, run_id: str, *, above: int) -> int:
        """Return a new token above `above` (Redis lost its counter, e.g. restarted empty)."""
        try:
            return int(_scripts(self._client).raise_fence(keys=[_fence_key(run_id)], args=[above]))
        except redis.RedisError as exc:
            raise _unreachable(exc) from exc


@dataclass(frozen=True)
class _Scripts:
    acquire: Any
    release: Any
    raise_fence: Any


@functools.cache
def _scripts(client: redis.Redis) -> _Scripts:
    return _Scripts(
        acquire=client.register_script(FencedLock.ACQUIRE),
        release=client.register_script(FencedLock.RELEASE),
        # Set the counter above a floor and return the next token, in one atomic step.
        raise_fence=client.register_script(
            "local v = tonumber(redis.call('GET', KEYS[1]) or '0') "
            "if v <= tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1]) end "
            "return redis.call('INCR', KEYS[1])"
        ),
    )


def _lease_key(run_id: str) -> str:
    return f"agentdb:lease:{run_id}"


def _fence_key(run_id: str) -> str:
    return f"agentdb:fence:{run_id}"


def _fence_key_of(lease_key: str) -> str:
    return _fence_key(lease_key.removeprefix(_lease_key("")))


def _wake_key_of(lease_key: str) -> str:
    return f"agentdb:wake:{lease_key.removeprefix(_lease_key(''))}"


def _unreachable(exc: Exception) -> DependencyUnavailable:
    return DependencyUnavailable(
        f"Redis is unreachable ({type(exc).__name__}); nothing was written. Retry.",
        retry_after=1,
    )


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
