"""Lazily opened connections to tenant and run databases, kept in a bounded LRU per thread.

Tenant and run aliases are never added to `connections.settings`: Django walks that mapping on
every `connections.all()` (twice per request), so it would grow with the number of databases ever
touched. Instead each wrapper is placed straight into the thread's `connections` storage, where
`connections[alias]`, `transaction.atomic(using=alias)` and querysets find it, and the LRU below
closes and removes the least recently used one when a thread holds more than its share.
Connections stay open across requests (they are invisible to `close_old_connections`), which
saves ~1.3 ms of re-opening per request.

Budgets (decision 0018): a process keeps at most `max_open_databases()` of these connections
open, derived from `RLIMIT_NOFILE` (3 descriptors each) and `TENANCY_MAX_OPEN_DATABASES`; a
thread keeps at most its share of them. A thread only ever closes its own connections: at the
budget it closes its least recently used idle ones, and if it has none, the request answers 503.

Faults (decision 0017): a file is checked before it is opened and each time a cached connection
is taken (`touch`); a connection that hit an I/O, read-only, corruption, CANTOPEN or "not a
database" error is closed at its next use, never reused.
"""

import os
import resource
import sqlite3
import threading
import weakref
from collections import OrderedDict
from contextlib import suppress
from functools import cached_property
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from asgiref.local import Local
from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper
from django.db.utils import DatabaseErrorWrapper

from tenancy import faults
from tenancy.exceptions import ConnectionsExhausted, DatabaseUnavailable

if TYPE_CHECKING:
    from tenants.models import Database

SQLITE_PAGE_SIZE = faults.PAGE_SIZE  # SQLite's default, used by every template
FDS_PER_CONNECTION = 3  # the database, its -wal and its -shm
# Memory of one open connection besides its page cache: SQLite's schema and statements, the
# -shm mapping, Django's wrapper (measured ~50-150 KiB; tests/tenancy/test_faults.py).
CONNECTION_OVERHEAD_KIB = 256

# Same locality as Django's own connection storage (`ConnectionHandler.thread_critical`).
_local = Local(thread_critical=True)


def _storage() -> Any:
    """Django's per-thread connection storage (private, stable since Django 3.2; decision 0001)."""
    return connections._connections  # type: ignore[attr-defined]


def _lru() -> "OrderedDict[str, TenancyWrapper]":
    try:
        return _local.lru
    except AttributeError:
        _local.lru = OrderedDict()
        return _local.lru


def sqlite_settings(
    path: Path,
    *,
    create: bool = False,
    max_bytes: int | None = None,
    synchronous: str | None = None,
) -> dict[str, Any]:
    """Return a complete Django database settings dict for one SQLite file.

    Unless `create` is true the file is opened with `mode=rw`, so a missing database is an error
    rather than a new empty file. `max_bytes` caps the file's growth (SQLite answers "database or
    disk is full"), which is how per-run size limits cost nothing per write. `synchronous`
    overrides `SQLITE_SYNCHRONOUS` for this file (run databases: `RUN_SQLITE_SYNCHRONOUS`).
    """
    name = path.as_uri() if create else f"{path.as_uri()}?mode=rw"
    options = dict(settings.SQLITE_OPTIONS)
    # Bounded page cache: open connections x this is the SQLite part of a worker's RSS.
    pragmas = f"PRAGMA cache_size=-{max(16, settings.SQLITE_CACHE_KIB)};"
    if max_bytes is not None:
        pragmas += f" PRAGMA max_page_count={max(1, max_bytes // SQLITE_PAGE_SIZE)};"
    if synchronous is not None:
        pragmas += f" PRAGMA synchronous={synchronous};"
    options["init_command"] = f"{options['init_command']} {pragmas}"
    return {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": name,
        "OPTIONS": options,
        "ATOMIC_REQUESTS": False,
        "AUTOCOMMIT": True,
        "CONN_MAX_AGE": None,
        "CONN_HEALTH_CHECKS": False,
        "TIME_ZONE": None,
        "USER": "",
        "PASSWORD": "",
        "HOST": "",
        "PORT": "",
        "TEST": {"CHARSET": None, "COLLATION": None, "MIGRATE": True, "MIRROR": None, "NAME": None},
    }


# --- Budgets --------------------------------------------------------------------------------------


def descriptor_budget() -> int:
    """Return how many database connections this process's descriptor limit leaves room for.

    The soft `RLIMIT_NOFILE` minus a reserve for everything else (sockets: a quarter of the
    limit, which is what gunicorn.conf.py caps `worker_connections` at; the control plane and
    Redis per thread; Python itself), divided by 3 descriptors per WAL connection.
    """
    soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    reserve = settings.TENANCY_FD_RESERVE
    if reserve is None:
        reserve = 32 + 8 * settings.WEB_THREADS + soft // 4
    return max(1, (soft - reserve) // FDS_PER_CONNECTION)


def max_open_databases() -> int:
    """Return the most tenant/run connections this process keeps open at once."""
    return max(1, min(settings.TENANCY_MAX_OPEN_DATABASES, descriptor_budget()))


def worst_case_connection_kib() -> int:
    """Return the most memory one open tenant/run connection may take (README's RSS budget)."""
    return max(16, settings.SQLITE_CACHE_KIB) + CONNECTION_OVERHEAD_KIB


def per_thread_limit() -> int:
    """Return the most connections one thread keeps: its share of the process budget."""
    share = max_open_databases() // max(1, settings.WEB_THREADS)
    return max(1, min(settings.TENANCY_CONNECTIONS_PER_THREAD, share))


class _OpenCount:
    """Open tenant/run connections of this process, across threads."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.value = 0

    def try_take(self, limit: int) -> bool:
        with self._lock:
            if self.value >= limit:
                return False
            self.value += 1
            return True

    def give_back(self) -> None:
        with self._lock:
            self.value -= 1


_open = _OpenCount()


def open_count() -> int:
    """Return how many tenant/run connections this process has open (all threads)."""
    return _open.value


# --- The wrapper ----------------------------------------------------------------------------------


class _FaultNotingErrors(DatabaseErrorWrapper):
    """Django's error wrapper, which first notes faults (by SQLite result code) on the wrapper."""

    wrapper: "TenancyWrapper"

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_value: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if isinstance(exc_value, sqlite3.Error):
            self.wrapper.note_error(exc_value)
        super().__exit__(exc_type, exc_value, traceback)


class TenancyWrapper(SQLiteWrapper):
    """Django's SQLite wrapper for one tenant or run file, which checks that file.

    `database` is the registry row (None for scratch and template connections, which are not
    checked). The file's identity (device, inode, size, mtime, and its -wal's inode) is taken
    when the connection opens and compared each time it is taken (`verify`).
    """

    def __init__(
        self,
        settings_dict: dict[str, Any],
        alias: str,
        *,
        path: Path,
        database: "Database | None" = None,
    ) -> None:
        super().__init__(settings_dict, alias)
        self.path = path
        self.database = database
        self.fault: faults.Fault | None = None
        self.rechecked = False
        self._identity: tuple[int, int, int, int] | None = None  # db dev, ino; wal dev, ino
        self._size = 0
        self._mtime_ns = 0
        self._slot: weakref.finalize | None = None

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:  # type: ignore[override]
        return _FaultNotingErrors(self)

    def note_error(self, exc: sqlite3.Error) -> None:
        fault = faults.classify(exc, self.path if self.database is not None else None)
        if fault is None:
            return
        self.fault = fault
        faults.record_fault(self.database, fault, f"{exc} ({exc.sqlite_errorname})")

    def _fail(self, fault: faults.Fault, message: str) -> DatabaseUnavailable:
        self.fault = fault
        faults.record_fault(self.database, fault, message)
        return faults.unavailable(fault, message)

    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        checked = self.database is not None
        try:
            before = faults.check_file(self.path) if checked else None
        except faults.FileFault as exc:
            raise self._fail(exc.fault, exc.message) from None
        self._take_slot()
        try:
            try:
                conn = super().get_new_connection(conn_params)
            except sqlite3.Error as exc:
                fault = faults.classify(exc, self.path) if checked else None
                if fault is None:
                    raise
                if fault is faults.Fault.UNUSABLE and _cannot_open_more(self.path):
                    raise faults.exhausted("opening a database") from exc
                raise self._fail(fault, f"{exc} ({exc.sqlite_errorname})") from exc
            try:
                if before is not None:
                    self._remember(before, conn)
            except BaseException:
                conn.close()
                raise
        except BaseException:
            self._give_slot_back()
            raise
        self.fault = None
        return conn

    def _remember(self, before: os.stat_result, conn: sqlite3.Connection) -> None:
        after = os.stat(self.path)
        if (before.st_dev, before.st_ino) != (after.st_dev, after.st_ino):
            raise self._fail(faults.Fault.DAMAGED, "the file was replaced while being opened")
        wal = os.stat(faults.wal_path(self.path))  # journal_mode=WAL has opened it
        self._identity = (after.st_dev, after.st_ino, wal.st_dev, wal.st_ino)
        self._size, self._mtime_ns = after.st_size, after.st_mtime_ns
        assert self.database is not None
        if faults.needs_recheck(self.database, self.path):
            problem = faults.quick_check(conn)
            if problem:
                raise self._fail(faults.Fault.DAMAGED, f"quick_check: {problem}")
            faults.record_recovered(self.database)
            self.rechecked = True

    def verify(self) -> None:
        """Check that the open file is still the registered one; raise `DatabaseUnavailable`.

        Two `stat` calls (about 1-3 us each); the header is re-read only when the file changed
        (after a checkpoint).
        """
        if self._identity is None:
            return
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            raise self._fail(faults.Fault.MISSING, "the file was deleted while open") from None
        if (st.st_dev, st.st_ino) != self._identity[:2]:
            raise self._fail(faults.Fault.DAMAGED, "the file was replaced while open")
        if st.st_size < self._size:
            raise self._fail(
                faults.Fault.DAMAGED,
                f"the file was truncated while open ({self._size} to {st.st_size} bytes)",
            )
        if st.st_mtime_ns != self._mtime_ns:
            problem = faults.check_header(self.path, st.st_size)
            if problem:
                raise self._fail(faults.Fault.DAMAGED, f"the file {problem}")
            self._size, self._mtime_ns = st.st_size, st.st_mtime_ns
        try:
            wal = os.stat(faults.wal_path(self.path))
        except FileNotFoundError:
            raise self._fail(faults.Fault.DAMAGED, "its -wal file was deleted while open") from None
        if (wal.st_dev, wal.st_ino) != self._identity[2:]:
            raise self._fail(faults.Fault.DAMAGED, "its -wal file was replaced while open")

    def _take_slot(self) -> None:
        limit = max_open_databases()
        if _open.try_take(limit):
            self._slot = weakref.finalize(self, _open.give_back)
            return
        # At the budget: close this thread's own idle connections, least recently used first
        # (a thread cannot close another thread's connections).
        for alias, conn in list(_lru().items()):
            if conn is self or conn.in_atomic_block or conn.connection is None:
                continue
            release(alias)
            if _open.try_take(limit):
                self._slot = weakref.finalize(self, _open.give_back)
                return
        raise ConnectionsExhausted(
            f"All {limit} database connections of this server process are in use; retry "
            "(TENANCY_MAX_OPEN_DATABASES and the descriptor limit set the budget)."
        )

    def _give_slot_back(self) -> None:
        if self._slot is not None:
            self._slot()  # runs once: the finalizer is then dead
            self._slot = None

    def _close(self) -> None:
        try:
            super()._close()  # type: ignore[misc]
        finally:
            self._give_slot_back()
            self._identity = None


def _cannot_open_more(path: Path) -> bool:
    """After a CANTOPEN on an existing file: is this process out of descriptors?

    Probed on /dev/null, never on the database file: closing a descriptor of it would drop the
    POSIX locks SQLite holds on it in this process (see `faults.check_header`).
    """
    try:
        os.close(os.open(os.devnull, os.O_RDONLY | os.O_CLOEXEC))
    except OSError as exc:
        return exc.errno in faults.EXHAUSTED_ERRNOS
    return False


# --- The per-thread LRU ---------------------------------------------------------------------------


def touch(alias: str, database: "Database | None" = None) -> bool:
    """Mark `alias` most recently used; return False if this thread has no usable connection.

    Outside a transaction the cached connection is verified against its file: a connection that
    hit a fault, or whose database is suspected (`faults.needs_recheck`), is closed (False: the
    caller opens a new one, which checks the file again); a deleted, replaced or truncated file
    closes it and raises `DatabaseUnavailable` (503).
    """
    lru = _lru()
    conn = lru.get(alias)
    if conn is None:
        return False
    lru.move_to_end(alias)
    if conn.in_atomic_block:
        # Checked when the transaction began; never closed under it.
        if conn.fault is not None:
            raise faults.unavailable(conn.fault, "an earlier statement hit a fault")
        return True
    if conn.fault is not None or (
        database is not None and not conn.rechecked and faults.needs_recheck(database)
    ):
        release(alias)
        return False
    if conn.connection is not None:
        try:
            conn.verify()
        except DatabaseUnavailable:
            release(alias)
            raise
    return True


def connection_for(
    alias: str,
    path: Path,
    *,
    create: bool = False,
    max_bytes: int | None = None,
    database: "Database | None" = None,
    synchronous: str | None = None,
) -> BaseDatabaseWrapper:
    """Return this thread's connection wrapper for `alias`, opening a slot for it if needed.

    With `database` (the registry row), the file is checked before it is opened and each time
    the connection is taken (`touch`).
    """
    lru = _lru()
    conn = lru.get(alias)
    if conn is not None:
        lru.move_to_end(alias)
        return conn
    conn = TenancyWrapper(
        sqlite_settings(path, create=create, max_bytes=max_bytes, synchronous=synchronous),
        alias,
        path=path,
        database=database,
    )
    setattr(_storage(), alias, conn)
    lru[alias] = conn
    _evict(lru)
    return conn


def _evict(lru: "OrderedDict[str, TenancyWrapper]") -> None:
    limit = per_thread_limit()
    if len(lru) <= limit:
        return
    # A connection inside a transaction stays, and so does the one just opened; the next least
    # recently used one goes instead (the LRU may run over its size while transactions nest).
    for alias in list(lru)[:-1]:
        if len(lru) <= limit:
            return
        if lru[alias].in_atomic_block:
            continue
        release(alias)


def release(alias: str) -> None:
    """Close this thread's connection for `alias` (if any) and forget the alias."""
    conn = _lru().pop(alias, None)
    if conn is None:
        return
    try:
        conn.close()
    except Exception:
        # A connection that hit a fault may fail to close cleanly; it is dropped either way.
        raw, conn.connection = conn.connection, None
        with suppress(Exception):
            raw.close()
        conn._give_slot_back()
    if hasattr(_storage(), alias):
        delattr(_storage(), alias)


def close_all() -> None:
    """Close every tenant/run connection this thread holds (tests, forks, shutdown)."""
    for alias in list(_lru()):
        release(alias)


def open_aliases() -> list[str]:
    """Return this thread's tenant/run aliases, least recently used first."""
    return list(_lru())
