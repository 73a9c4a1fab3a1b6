"""Lazily opened connections to tenant and run databases, shared by a process's threads.

Tenant and run aliases are never added to `connections.settings`: Django walks that mapping on
every `connections.all()` (twice per request), so it would grow with the number of databases ever
touched. Instead each wrapper is placed straight into the thread's `connections` storage, where
`connections[alias]`, `transaction.atomic(using=alias)` and querysets find it.

A thread borrows a connection for as long as it works on that database: a request, a Celery
task, an embedded tool call. At the end (`give_back`: Django's `request_finished`, Celery's
`task_postrun`) its connections go back to the process's idle pool, where the next thread to
need that database takes one instead of opening the file again (~1 ms with the schema gate).
One pool per process, not one LRU per thread: a database that 8 threads use is open about once,
not 8 times, which divides a worker's connections, descriptors and page caches by up to
`WEB_THREADS` (decision 0052). A thread holding more than `TENANCY_CONNECTIONS_PER_THREAD` at
once (a command walking the fleet) closes its least recently used ones.

Budgets (decision 0018): a process keeps at most `max_open_databases()` of these connections
open, derived from `RLIMIT_NOFILE` (4 descriptors each) and `TENANCY_MAX_OPEN_DATABASES`, of
which at most `TENANCY_IDLE_CONNECTIONS` idle in the pool (past it, spare copies of a database
are closed before the only one of a database in recent use, then the least recently returned;
decision 0060). A closed connection keeps its slot while SQLite keeps its descriptor
(`_DeferredCloses`). At the budget, opening another closes idle ones first; if every
connection is in use, the request answers 503.

Faults (decision 0017): a file is checked before it is opened and each time a cached connection
is taken (`touch`); a connection that hit an I/O, read-only, corruption, CANTOPEN or "not a
database" error is closed at its next use, never reused.
"""

import os
import resource
import sqlite3
import threading
import time
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
# The database, its -wal and its -shm, and the descriptor SQLite keeps open for the file check's
# read-only connection while this one holds the file (decision 0060).
FDS_PER_CONNECTION = 4
# Past its limit, the idle pool closes spare copies of busy databases before the only idle
# connection of a database returned this recently (decision 0060).
SPARE_FIRST_S = 1.0
# Memory of one open connection besides its page cache: SQLite's schema and statements, the
# -shm mapping, Django's wrapper (measured ~50-150 KiB; tests/tenancy/test_faults.py).
CONNECTION_OVERHEAD_KIB = 256

# Same locality as Django's own connection storage (`ConnectionHandler.thread_critical`).
_local = Local(thread_critical=True)


def _storage() -> Any:
    """Django's per-thread connection storage (private, stable since Django 3.2; decision 0001)."""
    return connections._connections  # type: ignore[attr-defined]


def _lru() -> "OrderedDict[str, TenancyWrapper]":
    """This thread's borrowed connections, least recently used first."""
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
    read_only: bool = False,
) -> dict[str, Any]:
    """Return a complete Django database settings dict for one SQLite file.

    Unless `create` is true the file is opened with `mode=rw`, so a missing database is an error
    rather than a new empty file. `max_bytes` caps the file's growth (SQLite answers "database or
    disk is full"), which is how per-run size limits cost nothing per write. `synchronous`
    overrides `SQLITE_SYNCHRONOUS` for this file (run databases: `RUN_SQLITE_SYNCHRONOUS`).
    `read_only` opens an immutable file (restored archives): no journal, no locks, no writes.
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
    if read_only:
        name = f"{path.as_uri()}?mode=ro&immutable=1"
        options["init_command"] = pragmas
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
    Redis per thread; Python itself), divided by `FDS_PER_CONNECTION` (4) per WAL connection.
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
    """Return the most connections one thread holds at once: its share of the process budget."""
    share = max_open_databases() // max(1, settings.WEB_THREADS)
    return max(1, min(settings.TENANCY_CONNECTIONS_PER_THREAD, share))


def idle_limit() -> int:
    """Return the most idle connections the process keeps in its pool (never more than are
    open, which `max_open_databases()` bounds when they open)."""
    return max(0, settings.TENANCY_IDLE_CONNECTIONS)


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


class _DeferredCloses:
    """Database descriptors SQLite keeps open after their connection closed (decision 0060).

    SQLite's unix VFS does not close a connection's database descriptor while another
    connection of this process holds a lock on the same file (every idle WAL connection holds a
    shared one): closing it would drop the other's POSIX locks. The descriptor waits on the file
    until its last connection closes, or is reused by the next connection that opens the file.
    Until then the closed connection's budget slot stays taken, so that the budget counts the
    descriptors that are really open.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        # (device, inode) of a database file -> [connections open to it, deferred descriptors]
        self._files: dict[tuple[int, int], list[int]] = {}

    # A connection wrapper is freed by the garbage collector, which runs its finalizer
    # (`_release`, which calls `closed`) in whichever thread allocated a tracked object at that
    # moment: nothing under this lock may allocate one (a list, a tuple, a bound method), or a
    # collection there would take the lock again in the same thread and hang it.

    def opened(self, key: tuple[int, int]) -> None:
        """Count a connection about to open `key`; one opened while a descriptor of that file
        waited reuses it (SQLite looks for one first), and that descriptor's slot is free."""
        fresh = [0, 0]  # allocated before the lock (see above)
        with self._lock:
            counts = self._files.setdefault(key, fresh)
            counts[0] += 1
            reused = counts[1] > 0
            if reused:
                counts[1] -= 1
        if reused:
            _open.give_back()

    def closed(self, key: tuple[int, int]) -> bool:
        """Count a connection to `key` closed; True if SQLite kept its descriptor (its slot
        stays taken). The file's last connection frees every slot kept for it."""
        with self._lock:
            counts = self._files.get(key)
            if counts is None:
                return False
            counts[0] -= 1
            if counts[0] > 0:
                counts[1] += 1
                return True
            del self._files[key]
        for _ in range(counts[1]):
            _open.give_back()
        return False


_deferred = _DeferredCloses()


def _release(key: tuple[int, int] | None) -> None:
    """Give a closed (or collected) connection's slot back, unless SQLite kept its descriptor
    (`key`: the file's device and inode; None for a connection whose file is not checked)."""
    if key is not None and _deferred.closed(key):
        return
    _open.give_back()


def open_count() -> int:
    """Return how many tenant/run connections this process has open (all threads), counting a
    closed one whose descriptor SQLite still keeps (`_DeferredCloses`)."""
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
        self._wal_path = faults.wal_path(path)
        self.borrowed_at_release = 0  # `_releases` when this thread took it (see `_return`)
        self._slot: weakref.finalize | None = None
        self.idle_since = 0.0  # time.monotonic() when it last went into the idle pool

    @cached_property
    def wrap_database_errors(self) -> DatabaseErrorWrapper:  # type: ignore[override]
        return _FaultNotingErrors(self)

    def note_error(self, exc: sqlite3.Error) -> None:
        fault = faults.classify(exc, self.path if self.database is not None else None)
        if fault is None:
            return
        self.fault = fault
        faults.record_fault(self.database, fault, f"{exc} ({exc.sqlite_errorname})")

    def adopt(self) -> None:
        """Bind this wrapper to the calling thread, which borrowed it from the pool: Django's own
        check (`validate_thread_sharing`, which reads this private attribute) keeps guarding it
        against use from any other thread."""
        self._thread_ident = threading.get_ident()  # type: ignore[attr-defined]

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
        self._take_slot(None if before is None else (before.st_dev, before.st_ino))
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
        wal = os.stat(self._wal_path)  # journal_mode=WAL has opened it
        self._identity = (after.st_dev, after.st_ino, wal.st_dev, wal.st_ino)
        self._size, self._mtime_ns = after.st_size, after.st_mtime_ns
        assert self.database is not None
        if faults.needs_recheck(self.database, self.path):
            problem = faults.quick_check(conn)
            if problem:
                raise self._fail(faults.Fault.DAMAGED, f"quick_check: {problem}")
            faults.record_recovered(self.database)
            self.rechecked = True

    def still_the_file(self) -> bool:
        """Tell, without recording anything, whether the registered path still names the file
        this connection holds (device and inode): the check before a connection is pooled,
        where the file may have been archived, deleted or replaced on purpose meanwhile."""
        if self._identity is None:
            return True
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return False
        return (st.st_dev, st.st_ino) == self._identity[:2]

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
            wal = os.stat(self._wal_path)
        except FileNotFoundError:
            raise self._fail(faults.Fault.DAMAGED, "its -wal file was deleted while open") from None
        if (wal.st_dev, wal.st_ino) != self._identity[2:]:
            raise self._fail(faults.Fault.DAMAGED, "its -wal file was replaced while open")

    def _take_slot(self, key: tuple[int, int] | None) -> None:
        """Take a place in the budget for a connection about to open the file `key`. It is
        counted on that file before SQLite opens it: from then on its locks keep the file's
        deferred descriptors open, whatever another thread closes meanwhile."""
        limit = max_open_databases()

        def taken() -> bool:
            if not _open.try_take(limit):
                return False
            self._slot = weakref.finalize(self, _release, key)
            if key is not None:
                _deferred.opened(key)
            return True

        if taken():
            return
        # At the budget: close idle connections of the pool, least recently returned first,
        # then this thread's own that no transaction holds (never another thread's in use).
        while _pool.close_oldest():
            if taken():
                return
        for alias, conn in list(_lru().items()):
            if conn is self or conn.in_atomic_block or conn.connection is None:
                continue
            _drop(alias)
            if taken():
                return
        raise ConnectionsExhausted(
            f"All {limit} database connections of this server process are in use; retry "
            "(TENANCY_MAX_OPEN_DATABASES and the descriptor limit set the budget)."
        )

    def _give_slot_back(self) -> None:
        if self._slot is not None:
            self._slot()  # `_release`, once: the finalizer is then dead
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


# --- The pool and each thread's borrowed connections ----------------------------------------------


class _Pool:
    """Idle connections of this process by alias, least recently returned alias first."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._idle: OrderedDict[str, list[TenancyWrapper]] = OrderedDict()
        self.size = 0

    def take(self, alias: str) -> "TenancyWrapper | None":
        with self._lock:
            stack = self._idle.get(alias)
            if not stack:
                return None
            conn = stack.pop()  # the most recently returned: its page cache is the warmest
            if not stack:
                del self._idle[alias]
            self.size -= 1
        conn.adopt()
        return conn

    def put(self, conn: "TenancyWrapper") -> None:
        conn.idle_since = time.monotonic()
        with self._lock:
            self._idle.setdefault(conn.alias, []).append(conn)
            self._idle.move_to_end(conn.alias)
            self.size += 1
            limit = idle_limit()
            surplus = [self._pop_oldest() for _ in range(max(0, self.size - limit))]
        for old in surplus:
            _close_quietly(old)

    def _pop_oldest(self, spares_first: bool = True) -> "TenancyWrapper":
        """Take the idle connection to close next: the least recently returned database's,
        unless that database was returned within `SPARE_FIRST_S` and another database has
        spare copies idle (opened for concurrent requests to it): then the oldest of those
        spares. So every database in recent use keeps one connection before any keeps two;
        one no request has returned for a while goes first (decision 0060)."""
        alias, stack = next(iter(self._idle.items()))
        if (
            spares_first
            and len(stack) == 1
            and self.size > len(self._idle)  # some database has spare copies idle
            and time.monotonic() - stack[0].idle_since < SPARE_FIRST_S
        ):
            alias = next(a for a, spares in self._idle.items() if len(spares) > 1)
            stack = self._idle[alias]
        conn = stack.pop(0)
        if not stack:
            del self._idle[alias]
        self.size -= 1
        return conn

    def close_oldest(self) -> bool:
        """Close the least recently returned database's oldest idle connection; False if there
        is none. For the budget: a spare copy would free no slot while its database's other
        copy stays open (SQLite keeps its descriptor, `_DeferredCloses`)."""
        with self._lock:
            if not self.size:
                return False
            conn = self._pop_oldest(spares_first=False)
        _close_quietly(conn)
        return True

    def drain(self, alias: str | None = None) -> None:
        """Close the idle connections of `alias` (of every alias if None)."""
        with self._lock:
            if alias is None:
                closing = [conn for stack in self._idle.values() for conn in stack]
                self._idle.clear()
            else:
                closing = self._idle.pop(alias, [])
            self.size -= len(closing)
        for conn in closing:
            _close_quietly(conn)

    def aliases(self) -> list[str]:
        with self._lock:
            return list(self._idle)


_pool = _Pool()
# Bumped by every `release`: a copy given back after one is checked against its file first.
_releases = 0
# Connections a forked child inherited: never used or closed there (SQLite connections
# must not cross a fork; closing one could checkpoint the parent's file), kept referenced so
# that no finalizer closes them either.
_abandoned_at_fork: list[list["TenancyWrapper"]] = []


def _forget_pool_in_child() -> None:
    """In a forked child: forget the idle pool and the forking thread's borrowed connections
    (other threads do not exist in the child); the child opens its own."""
    global _pool, _deferred
    inherited = [conn for stack in _pool._idle.values() for conn in stack]
    lru = _lru()
    inherited += [conn for alias in list(lru) if (conn := _forget(alias, lru)) is not None]
    _abandoned_at_fork.append(inherited)
    _pool = _Pool()
    _open.value = 0
    _open._lock = threading.Lock()
    _deferred = _DeferredCloses()


os.register_at_fork(after_in_child=_forget_pool_in_child)


def _close_quietly(conn: "TenancyWrapper") -> None:
    """Close `conn` from this thread; a connection that hit a fault may fail to close cleanly,
    and is dropped either way."""
    conn.adopt()
    try:
        conn.close()
    except Exception:
        raw, conn.connection = conn.connection, None
        with suppress(Exception):
            raw.close()
        conn._give_slot_back()


def _install(alias: str, conn: "TenancyWrapper") -> None:
    conn.borrowed_at_release = _releases
    lru = _lru()
    setattr(_storage(), alias, conn)
    lru[alias] = conn
    _evict(lru)


def _borrowed(alias: str) -> "TenancyWrapper | None":
    """Return this thread's connection for `alias`, taking an idle one from the pool if any."""
    lru = _lru()
    conn = lru.get(alias)
    if conn is not None:
        lru.move_to_end(alias)
        return conn
    conn = _pool.take(alias)
    if conn is not None:
        _install(alias, conn)
    return conn


def touch(alias: str, database: "Database | None" = None) -> bool:
    """Mark `alias` most recently used; return False if no usable connection is at hand.

    The thread's own connection, or an idle one of the pool, is verified against its file
    outside a transaction: a connection that hit a fault, or whose database is suspected
    (`faults.needs_recheck`), is closed (False: the caller opens a new one, which checks the
    file again); a deleted, replaced or truncated file closes it and raises
    `DatabaseUnavailable` (503).
    """
    conn = _borrowed(alias)
    if conn is None:
        return False
    if conn.in_atomic_block:
        # Checked when the transaction began; never closed under it.
        if conn.fault is not None:
            raise faults.unavailable(conn.fault, "an earlier statement hit a fault")
        return True
    if conn.fault is not None or (
        database is not None and not conn.rechecked and faults.needs_recheck(database)
    ):
        _drop(alias)
        return False
    if conn.connection is not None:
        try:
            conn.verify()
        except DatabaseUnavailable:
            release(alias)  # the file is gone or replaced: the pool's copies are stale too
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
    read_only: bool = False,
) -> BaseDatabaseWrapper:
    """Return this thread's connection wrapper for `alias`, or a new one (opened, in a slot of
    the budget, at its first query).

    Never an idle one of the pool: only `touch` takes those, because it verifies them against
    the file first. A caller here after `touch` said False (a suspected database, a connection
    that hit a fault) must get a fresh connection, or it would write through an unverified one
    to a file that was deleted or replaced.

    With `database` (the registry row), the file is checked before it is opened and each time
    the connection is taken (`touch`).
    """
    lru = _lru()
    conn = lru.get(alias)
    if conn is not None:
        lru.move_to_end(alias)
        return conn
    conn = TenancyWrapper(
        sqlite_settings(
            path, create=create, max_bytes=max_bytes, synchronous=synchronous, read_only=read_only
        ),
        alias,
        path=path,
        database=database,
    )
    _install(alias, conn)
    return conn


def _evict(lru: "OrderedDict[str, TenancyWrapper]") -> None:
    if len(lru) <= 1:  # every thread may hold one (the limit is at least 1)
        return
    limit = per_thread_limit()
    if len(lru) <= limit:
        return
    # A connection inside a transaction stays, and so does the one just taken; the next least
    # recently used one is closed instead (the thread may run over its share while transactions
    # nest). Closed, not pooled: this thread may still read through it (a queryset iterator),
    # and a pooled copy is another thread's to take.
    for alias in list(lru)[:-1]:
        if len(lru) <= limit:
            return
        if lru[alias].in_atomic_block:
            continue
        _drop(alias)


def _forget(
    alias: str, lru: "OrderedDict[str, TenancyWrapper] | None" = None
) -> "TenancyWrapper | None":
    conn = (_lru() if lru is None else lru).pop(alias, None)
    if conn is not None:
        with suppress(AttributeError):
            delattr(_storage(), alias)
    return conn


def _return(alias: str, lru: "OrderedDict[str, TenancyWrapper] | None" = None) -> None:
    """Hand this thread's connection for `alias` back to the pool (closed if unfit to reuse)."""
    conn = _forget(alias, lru)
    if conn is None:
        return
    if conn.connection is None:
        return  # never opened (or closed): nothing to keep
    released = conn.borrowed_at_release != _releases  # `release` ran while it was out
    if conn.fault is not None or conn.in_atomic_block or (released and not conn.still_the_file()):
        # A copy another thread held while `release` closed the idle ones (the file was
        # archived, deleted or replaced meanwhile) is closed, never pooled.
        _close_quietly(conn)
        return
    # Its quick_check vouched for the file when it opened, not for whatever is recorded later:
    # a taker re-checks it if the database is suspected by then.
    conn.rechecked = False
    _pool.put(conn)


def _drop(alias: str) -> None:
    """Close this thread's connection for `alias` (if any) and forget the alias."""
    conn = _forget(alias)
    if conn is not None:
        _close_quietly(conn)


def give_back() -> None:
    """Return every connection this thread holds to the pool (end of a request or a task).

    A connection still inside a transaction stays with the thread (its owner closes the block).
    """
    lru = _lru()
    if not lru:
        return
    for alias, conn in list(lru.items()):
        if not conn.in_atomic_block:
            _return(alias, lru)


def release(alias: str) -> None:
    """Close this thread's connection for `alias` and the pool's idle ones (the file is about to
    change: archived, replaced, migrated or refused)."""
    global _releases
    _releases += 1  # before closing: a copy borrowed elsewhere is then checked on its return
    _drop(alias)
    _pool.drain(alias)


def close_all() -> None:
    """Close this thread's connections and every idle one of the pool (tests, forks, fleet
    walks, shutdown). Other threads' borrowed connections are theirs to give back."""
    for alias in list(_lru()):
        _drop(alias)
    _pool.drain()


def open_aliases() -> list[str]:
    """Return this thread's borrowed aliases, least recently used first."""
    return list(_lru())


def idle_aliases() -> list[str]:
    """Return the aliases with an idle connection in the pool, least recently returned first."""
    return _pool.aliases()
