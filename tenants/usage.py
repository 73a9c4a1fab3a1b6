"""When API keys were last used: noted in memory, written to the control plane in batches.

A request whose key is resolved from the control plane (not from the per-process memo) notes the
time here, at most once a minute per key (decision 0006); a thread of each process writes what
was noted every `API_KEY_USAGE_FLUSH_S`, all keys in one transaction. Written on the request
path, as before, every such request paid a control-plane write transaction (on SQLite: its lock
and an fsync, shared by every process): with 10,000 tenants each calling now and then, that is
nearly every request (decision 0047). The times are advisory (the admin shows them): a process
killed with `kill -9` loses at most the last interval's; a graceful stop writes them (`atexit`).
`API_KEY_USAGE_FLUSH_S=0` writes them on the request path again (the tests do).
"""

import atexit
import logging
import os
import threading
import time
from contextlib import suppress
from datetime import datetime

from django.conf import settings
from django.db import connections, transaction

from tenants.models import ApiKey

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_pending: dict[int, datetime] = {}
_flushing = False  # this process's flushing thread is started


def _after_fork() -> None:
    # A child has no thread of its own yet and must not inherit a lock held at the fork.
    global _lock, _pending, _flushing
    _lock, _pending, _flushing = threading.Lock(), {}, False


os.register_at_fork(after_in_child=_after_fork)


def note_used(key_id: int, at: datetime) -> None:
    """Record that key `key_id` was used at `at`; written within `API_KEY_USAGE_FLUSH_S`."""
    global _flushing
    if settings.API_KEY_USAGE_FLUSH_S <= 0:
        _write([(key_id, at)])
        return
    with _lock:
        _pending[key_id] = at
        if _flushing:
            return
        _flushing = True
    threading.Thread(target=_flush_forever, name="api-key-usage", daemon=True).start()


def flush() -> int:
    """Write every noted time now; return how many keys were written."""
    with _lock:
        batch = sorted(_pending.items())  # one order in every process: no deadlock between them
        _pending.clear()
    if not batch:
        return 0
    try:
        _write(batch)
    except Exception as exc:
        logger.warning("API keys' last use not written (%r); retrying later", exc)
        with _lock:
            for key_id, at in batch:
                _pending.setdefault(key_id, at)  # a newer note wins
        return 0
    return len(batch)


def _write(batch: list[tuple[int, datetime]]) -> None:
    connection = connections["default"]
    field = ApiKey._meta.get_field("last_used_at")
    column, table, pk = field.column, ApiKey._meta.db_table, ApiKey._meta.pk.column
    # Never moves back: two processes may write the same key out of order.
    sql = (
        f'UPDATE "{table}" SET "{column}" = %s WHERE "{pk}" = %s '
        f'AND ("{column}" IS NULL OR "{column}" < %s)'
    )
    rows = []
    for key_id, at in batch:
        stored = field.get_db_prep_save(at, connection)
        rows.append((stored, key_id, stored))
    with transaction.atomic(using="default"), connection.cursor() as cursor:
        cursor.executemany(sql, rows)


def _flush_forever() -> None:
    last = time.monotonic()
    while True:
        interval = max(settings.API_KEY_USAGE_FLUSH_S, 0.05)
        # Wakes at least once a second, so a changed interval takes effect without a restart.
        time.sleep(max(0.0, min(1.0, last + interval - time.monotonic())))
        if time.monotonic() - last < interval:
            continue
        last = time.monotonic()
        try:
            flush()
        except Exception:  # never let the thread die: the next interval tries again
            logger.exception("API keys' last use: flush failed")
        with suppress(Exception):
            connections.close_all()  # this thread's own connections: no idle one held open


atexit.register(flush)  # a graceful stop writes what is pending (nothing: no database touched)
