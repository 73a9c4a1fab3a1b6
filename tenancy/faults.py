"""Faults of tenant and run database files (decision 0017).

- SQLite errors are classified by their result code (`sqlite3.Error.sqlite_errorcode`, kept as
  the `__cause__` of Django's wrapped errors), never by message text.
- A file is checked before a connection opens it (present, a SQLite header, whole pages,
  writable) and each time a cached connection is taken (same device and inode, not shrunk,
  header still valid when the file changed, same -wal file).
- A damaged or missing database is recorded in the registry (`Database.state`, `last_error`);
  the next successful open with a clean `PRAGMA quick_check` clears it.
"""

import errno
import logging
import os
import sqlite3
import threading
from contextlib import suppress
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING

from django.db import DatabaseError
from django.utils import timezone

from tenancy.exceptions import ConnectionsExhausted, DatabaseUnavailable

if TYPE_CHECKING:
    from tenants.models import Database

logger = logging.getLogger(__name__)

# SQLite result codes (https://www.sqlite.org/rescode.html); the low byte is the primary code.
SQLITE_BUSY = 5
SQLITE_LOCKED = 6
SQLITE_NOMEM = 7
SQLITE_READONLY = 8
SQLITE_IOERR = 10
SQLITE_CORRUPT = 11
SQLITE_FULL = 13
SQLITE_CANTOPEN = 14
SQLITE_NOTADB = 26
SQLITE_READONLY_DBMOVED = SQLITE_READONLY | (4 << 8)
SQLITE_CONSTRAINT_TRIGGER = 19 | (7 << 8)

PAGE_SIZE = 4096  # every template's page size (tenancy.connections.SQLITE_PAGE_SIZE)
EXHAUSTED_ERRNOS = (errno.EMFILE, errno.ENFILE)


class Fault(StrEnum):
    """What is wrong with a database file; the first two are recorded in the registry."""

    MISSING = "missing"  # no file at the registered path (deleted, moved away)
    DAMAGED = "damaged"  # not the database it should be: garbage, truncated, replaced
    UNUSABLE = "unusable"  # I/O error or read-only: the connection goes, the registry is unchanged


# --- Classifying errors ---------------------------------------------------------------------------


def sqlite_error(exc: BaseException | None) -> sqlite3.Error | None:
    """Return the `sqlite3.Error` behind `exc` (Django keeps it as `__cause__`), if any."""
    for _ in range(4):
        if exc is None:
            return None
        if isinstance(exc, sqlite3.Error):
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def sqlite_code(exc: BaseException | None) -> int | None:
    """Return the extended SQLite result code behind `exc`, or None."""
    error = sqlite_error(exc)
    return None if error is None else getattr(error, "sqlite_errorcode", None)


def primary_code(exc: BaseException | None) -> int | None:
    code = sqlite_code(exc)
    return None if code is None else code & 0xFF


def is_busy(exc: BaseException) -> bool:
    """Another connection holds the lock past the busy timeout: retry later."""
    return primary_code(exc) in (SQLITE_BUSY, SQLITE_LOCKED)


def is_full(exc: BaseException) -> bool:
    """The database reached `max_page_count` (the per-run size limit) or the disk is full."""
    return primary_code(exc) == SQLITE_FULL


def is_trigger_abort(exc: BaseException) -> bool:
    """A trigger's `RAISE(ABORT, ...)` refused the write (closed runs, decision 0009)."""
    return sqlite_code(exc) == SQLITE_CONSTRAINT_TRIGGER


def classify(exc: BaseException | None, path: Path | None = None) -> Fault | None:
    """Return the fault an error means for its connection, or None if the connection is fine.

    I/O, read-only, corruption, CANTOPEN and "not a database" errors are faults: the connection
    is discarded. With `path`, I/O and open errors on a file that is gone are `MISSING`.
    """
    code = sqlite_code(exc)
    if code is None:
        return None
    primary = code & 0xFF
    if code == SQLITE_READONLY_DBMOVED:
        return Fault.MISSING
    if primary in (SQLITE_CORRUPT, SQLITE_NOTADB):
        return Fault.DAMAGED
    if primary in (SQLITE_IOERR, SQLITE_READONLY, SQLITE_CANTOPEN):
        if path is not None and not path.exists():
            return Fault.MISSING
        return Fault.UNUSABLE
    return None


def descriptors_exhausted(exc: BaseException | None) -> bool:
    """Whether `exc` (or its cause) is EMFILE/ENFILE: this process is out of descriptors."""
    for _ in range(4):
        if exc is None:
            return False
        if isinstance(exc, OSError) and exc.errno in EXHAUSTED_ERRNOS:
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def exhausted(what: str) -> ConnectionsExhausted:
    return ConnectionsExhausted(
        f"This server process is out of file descriptors ({what}); retry the request."
    )


# --- Checking files -------------------------------------------------------------------------------


def wal_path(path: Path) -> Path:
    return path.with_name(path.name + "-wal")


def check_header(path: Path, size: int) -> str | None:
    """Return what is wrong with a database file's header and length, or None if nothing is.

    The header is read through SQLite with `immutable=1` (the main file only: no -wal, no
    locks), never with a plain `open()`: closing any descriptor of a file drops every POSIX
    lock this process holds on it, SQLite's included, and another process could then checkpoint
    and delete the -wal under our open connections (sqlite.org/howtocorrupt.html, 2.2). SQLite
    defers closing its own descriptor while other connections of the process hold locks.
    """
    if size < PAGE_SIZE:
        return f"was truncated ({size} bytes)"
    if size % PAGE_SIZE:
        return f"was truncated ({size} bytes is not a whole number of {PAGE_SIZE}-byte pages)"
    error = _schema_read_error(f"{path.as_uri()}?mode=ro&immutable=1")
    if error is None or primary_code(error) not in (SQLITE_NOTADB, SQLITE_CORRUPT):
        return None  # readable, or the caller's next stat (or SQLite's own open) says what is wrong
    if _schema_read_error(f"{path.as_uri()}?mode=ro") is None:
        return None  # the lock-free read raced a checkpoint: the locked read is consistent
    return f"is not a SQLite database (no SQLite header; {size} bytes)"


def _schema_read_error(uri: str) -> sqlite3.Error | None:
    """Read the schema version through a connection to `uri`; return SQLite's error, if any."""
    try:
        conn = sqlite3.connect(uri, uri=True)
    except sqlite3.Error as exc:
        return exc
    try:
        conn.execute("PRAGMA schema_version").fetchone()
        return None
    except sqlite3.DatabaseError as exc:
        if descriptors_exhausted(exc):
            raise exhausted("reading a database header") from exc
        return exc
    finally:
        conn.close()


class FileFault(Exception):
    """A database file failed a check; the caller records it and answers 503."""

    def __init__(self, fault: Fault, message: str):
        super().__init__(message)
        self.fault = fault
        self.message = message


def check_file(path: Path) -> os.stat_result:
    """Check a registered database file before opening it; return its `stat`.

    Raise `FileFault` when it is missing, damaged or read-only: SQLite would otherwise open a
    truncated file as an empty database, or a read-only one read-only for the connection's life.
    """
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise FileFault(Fault.MISSING, "the file is missing") from None
    problem = check_header(path, st.st_size)
    if problem:
        raise FileFault(Fault.DAMAGED, f"the file {problem}")
    for candidate in (path, wal_path(path)):
        if _read_only(candidate):
            raise FileFault(Fault.UNUSABLE, f"its {_part(candidate)} is read-only")
    return st


def _read_only(path: Path) -> bool:
    # access(W_OK) also sees immutable files and read-only mounts (root ignores modes). It also
    # fails for a file that does not exist, and a -wal comes and goes with its connections: only
    # a file that exists and stays unwritable across a re-check counts.
    return all(not os.access(path, os.W_OK) and path.exists() for _ in range(3))


def _part(path: Path) -> str:
    return "-wal file" if path.name.endswith("-wal") else "file"


def unavailable(fault: Fault, message: str) -> DatabaseUnavailable:
    return DatabaseUnavailable(
        f"The database is unavailable: {message}. Retry later; an operator has been told "
        "(the database registry and /healthz show it).",
        state=fault.value,
    )


# --- The registry ---------------------------------------------------------------------------------

# Databases this process saw fail: their next open runs `PRAGMA quick_check` even while a
# memoised registry row still says "ready".
_suspects: set[int] = set()
_suspects_lock = threading.Lock()

RECORDED = (Fault.MISSING, Fault.DAMAGED)


def marker_path(path: Path) -> Path:
    """Return the file beside a database that says a process found it damaged or missing.

    Written before the faulty connection is closed (closing may checkpoint into a truncated
    file), read by every process before it opens the file, removed after a clean quick check:
    unlike a memoised registry row, every process sees it at once.
    """
    return path.with_name(path.name + "-fault")


def needs_recheck(database: "Database", path: Path | None = None) -> bool:
    """Whether the next connection to `database` must pass `PRAGMA quick_check` first.

    With `path`, the fault marker on disk counts too (one `stat`, only when opening).
    """
    if database.state in RECORDED or database.pk in _suspects:
        return True
    return path is not None and marker_path(path).exists()


def record_fault(database: "Database | None", fault: Fault, message: str) -> None:
    """Record a damaged or missing database in the registry (best effort; always logged)."""
    logger.error("database %s: %s (%s)", database.path if database else "(scratch)", message, fault)
    if database is None or fault not in RECORDED:
        return
    from tenancy.paths import absolute
    from tenants.models import Database

    with _suspects_lock:
        _suspects.add(database.pk)
    stamp = timezone.now().isoformat(timespec="seconds")
    # Fails only if the whole directory is gone, where nothing can be opened anyway.
    with suppress(OSError):
        marker_path(absolute(database.path)).write_text(f"{stamp} {fault}: {message}\n")
    try:
        (
            Database.objects.filter(pk=database.pk)
            .exclude(state__in=[Database.State.QUARANTINED, fault.value])
            .update(state=fault.value, last_error=f"{stamp} {message}"[:2000])
        )
    except DatabaseError:
        logger.exception("could not record database %s as %s", database.path, fault)


def record_recovered(database: "Database") -> None:
    """Clear a recorded damaged/missing state after a clean open and quick check."""
    from tenancy.paths import absolute
    from tenants.models import Database

    with _suspects_lock:
        _suspects.discard(database.pk)
    marker_path(absolute(database.path)).unlink(missing_ok=True)
    try:
        updated = Database.objects.filter(
            pk=database.pk, state__in=[f.value for f in RECORDED]
        ).update(state=Database.State.READY, last_error="")
    except DatabaseError:
        logger.exception("could not clear the recorded fault of database %s", database.path)
        return
    if updated:
        logger.warning("database %s: passed quick_check again; back to ready", database.path)


def quick_check(connection: sqlite3.Connection) -> str | None:
    """Return the first problem `PRAGMA quick_check` reports, or None when the file is sound."""
    rows = connection.execute("PRAGMA quick_check").fetchall()
    first = rows[0][0] if rows else "no answer"
    return None if first == "ok" else str(first)


def database_recheck(database: "Database") -> str:
    """Check a registered database's file now (header, then `quick_check`); record the result.

    Return the resulting state: "ready", or the fault found. For operators (the admin's
    "Recheck" action); requests recheck on their own when they next open the database.
    """
    from contextlib import closing

    from tenancy.paths import absolute

    path = absolute(database.path)
    try:
        check_file(path)
        with closing(sqlite3.connect(f"{path.as_uri()}?mode=rw", uri=True)) as conn:
            problem = quick_check(conn)
    except FileFault as exc:
        record_fault(database, exc.fault, exc.message)
        return exc.fault.value
    except sqlite3.Error as exc:
        fault = classify(exc, path) or Fault.UNUSABLE
        record_fault(database, fault, f"{exc} ({exc.sqlite_errorname})")
        return fault.value
    if problem:
        record_fault(database, Fault.DAMAGED, f"quick_check: {problem}")
        return Fault.DAMAGED.value
    record_recovered(database)
    return "ready"
