"""Lazily opened connections to tenant and run databases, kept in a bounded LRU per thread.

Tenant and run aliases are never added to `connections.settings`: Django walks that mapping on
every `connections.all()` (twice per request), so it would grow with the number of databases ever
touched. Instead each wrapper is placed straight into the thread's `connections` storage, where
`connections[alias]`, `transaction.atomic(using=alias)` and querysets find it, and the LRU below
closes and removes the least recently used one when a thread holds more than
`TENANCY_CONNECTIONS_PER_THREAD`. Connections stay open across requests (they are invisible to
`close_old_connections`), which saves ~1.3 ms of re-opening per request.
"""

from collections import OrderedDict
from pathlib import Path
from typing import Any

from asgiref.local import Local
from django.conf import settings
from django.db import connections
from django.db.backends.base.base import BaseDatabaseWrapper
from django.db.backends.sqlite3.base import DatabaseWrapper as SQLiteWrapper

SQLITE_PAGE_SIZE = 4096  # SQLite's default, used by every template

# Same locality as Django's own connection storage (`ConnectionHandler.thread_critical`).
_local = Local(thread_critical=True)


def _storage() -> Any:
    """Django's per-thread connection storage (private, stable since Django 3.2; decision 0001)."""
    return connections._connections  # type: ignore[attr-defined]


def _lru() -> "OrderedDict[str, BaseDatabaseWrapper]":
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
    if max_bytes is not None:
        pages = max(1, max_bytes // SQLITE_PAGE_SIZE)
        options["init_command"] = f"{options['init_command']} PRAGMA max_page_count={pages};"
    if synchronous is not None:
        options["init_command"] = f"{options['init_command']} PRAGMA synchronous={synchronous};"
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


def touch(alias: str) -> bool:
    """Mark `alias` most recently used; return False if this thread has no connection for it."""
    lru = _lru()
    if alias not in lru:
        return False
    lru.move_to_end(alias)
    return True


def connection_for(
    alias: str,
    path: Path,
    *,
    create: bool = False,
    max_bytes: int | None = None,
    synchronous: str | None = None,
) -> BaseDatabaseWrapper:
    """Return this thread's connection wrapper for `alias`, opening a slot for it if needed."""
    lru = _lru()
    conn = lru.get(alias)
    if conn is not None:
        lru.move_to_end(alias)
        return conn
    options = sqlite_settings(path, create=create, max_bytes=max_bytes, synchronous=synchronous)
    conn = SQLiteWrapper(options, alias)
    setattr(_storage(), alias, conn)
    lru[alias] = conn
    _evict(lru)
    return conn


def _evict(lru: "OrderedDict[str, BaseDatabaseWrapper]") -> None:
    limit = max(1, settings.TENANCY_CONNECTIONS_PER_THREAD)
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
    conn.close()
    if hasattr(_storage(), alias):
        delattr(_storage(), alias)


def close_all() -> None:
    """Close every tenant/run connection this thread holds (tests, forks, shutdown)."""
    for alias in list(_lru()):
        release(alias)


def open_aliases() -> list[str]:
    """Return this thread's tenant/run aliases, least recently used first."""
    return list(_lru())
