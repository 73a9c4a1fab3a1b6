"""When API keys were last used: noted in memory, written to the control plane in batches.

A request whose key is resolved from the control plane (not from the per-process memo) notes the
time here, at most once a minute per key (decision 0006); a thread of each process writes what
was noted every `API_KEY_USAGE_FLUSH_S`, all keys in one transaction. Written on the request
path, as before, every such request paid a control-plane write transaction (on SQLite: its lock
and an fsync, shared by every process): with 10,000 tenants each calling now and then, that is
nearly every request (decision 0047). The times are advisory (the admin shows them): a process
killed with `kill -9` loses at most the last interval's; a graceful stop writes them (`atexit`).
"""

import atexit
import logging
import os
import threading
import time
from datetime import datetime

from django.conf import settings
from django.db import DatabaseError, connections, transaction

from tenants.models import ApiKey

logger = logging.getLogger(__name__)

_lock = threading.Lock()
_pending: dict[int, datetime] = {}
_flusher_pid: int | None = None  # the process whose flushing thread runs


def note_used(key_id: int, at: datetime) -> None:
    """Record that key `key_id` was used at `at`; written within `API_KEY_USAGE_FLUSH_S`."""
    global _flusher_pid
    with _lock:
        _pending[key_id] = at
        if _flusher_pid == os.getpid():
            return
        first = _flusher_pid is None
        _flusher_pid = os.getpid()  # a forked child starts its own thread
    threading.Thread(target=_flush_forever, name="api-key-usage", daemon=True).start()
    if first:
        atexit.register(flush)


def flush() -> int:
    """Write every noted time now; return how many keys were written."""
    with _lock:
        batch = list(_pending.items())
        _pending.clear()
    if not batch:
        return 0
    connection = connections["default"]
    field = ApiKey._meta.get_field("last_used_at")
    sql = (
        f'UPDATE "{ApiKey._meta.db_table}" SET "{field.column}" = %s '
        f'WHERE "{ApiKey._meta.pk.column}" = %s'
    )
    try:
        rows = [(field.get_db_prep_save(at, connection), key_id) for key_id, at in batch]
        with transaction.atomic(using="default"), connection.cursor() as cursor:
            cursor.executemany(sql, rows)
    except DatabaseError as exc:
        logger.warning("API keys' last use not written (%s); retrying later", exc)
        with _lock:
            for key_id, at in batch:
                _pending.setdefault(key_id, at)  # a newer note wins
        return 0
    return len(batch)


def _flush_forever() -> None:
    last = time.monotonic()
    while True:
        # Wakes at least once a second, so a changed interval takes effect without a restart.
        time.sleep(max(0.0, min(1.0, last + settings.API_KEY_USAGE_FLUSH_S - time.monotonic())))
        if time.monotonic() - last < settings.API_KEY_USAGE_FLUSH_S:
            continue
        last = time.monotonic()
        try:
            flush()
        except Exception:  # never let the thread die: the next interval tries again
            logger.exception("API keys' last use: flush failed")
        finally:
            connections.close_all()  # this thread's own connections: no idle one held open
