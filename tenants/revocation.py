"""Revocation reaches every process within `REVOCATION_CHECK_SECONDS` (decision 0025).

API keys and runs are memoised per process for seconds (`project.memo`, decision 0008). A
revocation (key revoked, tenant suspended, changed or deleted) bumps one generation number,
kept in Redis when `REDIS_URL` is set and in the control plane (`tenants.Generation`) otherwise.
Every process reads it at most once per `REVOCATION_CHECK_SECONDS` and drops all its memos when
it moved; between reads the check is one clock read. The process that revokes drops its memos
at once. If the generation cannot be read, memos are dropped too (fail closed: every request
then reads the control plane, which is slower but never stale).
"""

import functools
import logging
import threading
import time

import redis
from django.conf import settings
from django.db import DatabaseError, IntegrityError, transaction
from django.db.models import F

from project.memo import memos_clear
from tenants.models import Generation

logger = logging.getLogger(__name__)

NAME = "revocation"
REDIS_KEY = "agentdb:generation:revocation"
# A Redis that does not answer within this long counts as unreadable (memos dropped).
REDIS_TIMEOUT_S = 0.25

_lock = threading.Lock()
_next_check = 0.0
_seen: tuple[str, int] | None = None  # (where it was read, generation)


@functools.lru_cache(maxsize=4)
def _redis(url: str) -> redis.Redis:
    # redis-py's pool notices a fork (gunicorn workers) and opens fresh sockets in the child.
    return redis.Redis.from_url(
        url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
    )


def generation_read() -> int:
    """Return the current revocation generation (0 before the first revocation)."""
    if settings.REDIS_URL:
        raw = _redis(settings.REDIS_URL).get(REDIS_KEY)
        return int(raw) if raw is not None else 0
    value = Generation.objects.filter(name=NAME).values_list("value", flat=True).first()
    return value or 0


def revocation_bump() -> None:
    """Record a revocation: every process drops its memoised lookups within a second.

    Call it inside the control-plane transaction that revokes. In embedded mode the generation
    row moves in that same transaction; with Redis it moves once the transaction committed, so
    no process can reload the old rows after seeing the new generation.
    """
    memos_clear()
    if settings.REDIS_URL:
        transaction.on_commit(_bump_redis, using="default")
    else:
        _bump_row()
    transaction.on_commit(memos_clear, using="default")


def _bump_row() -> None:
    if Generation.objects.filter(name=NAME).update(value=F("value") + 1):
        return
    try:
        with transaction.atomic(using="default"):
            Generation.objects.create(name=NAME, value=1)
    except IntegrityError:  # created by a concurrent first revocation
        Generation.objects.filter(name=NAME).update(value=F("value") + 1)


def _bump_redis() -> None:
    try:
        _redis(settings.REDIS_URL).incr(REDIS_KEY)
    except redis.RedisError:
        # The revocation itself is committed; other processes see it when their memos expire
        # (API_LOOKUP_CACHE_SECONDS) instead of within REVOCATION_CHECK_SECONDS.
        logger.exception("could not publish a revocation to Redis at %s", settings.REDIS_URL)


def revocation_check() -> None:
    """Drop this process's memos if a revocation happened anywhere since the last look.

    Reads the generation at most once per `REVOCATION_CHECK_SECONDS`; otherwise costs a clock
    read. Threads that arrive while another one reads carry on without waiting.
    """
    global _next_check, _seen
    now = time.monotonic()
    if now < _next_check or not _lock.acquire(blocking=False):
        return
    try:
        if now < _next_check:
            return
        try:
            current: tuple[str, int] | None = (settings.REDIS_URL, generation_read())
        except (redis.RedisError, DatabaseError):
            logger.warning("revocation generation unreadable; dropping memoised lookups")
            current = None
        if current is None or current != _seen:
            memos_clear()
        _seen = current
        _next_check = time.monotonic() + float(settings.REVOCATION_CHECK_SECONDS)
    finally:
        _lock.release()
