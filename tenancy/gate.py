"""The check every tenant or run database passes when this process opens a connection to it.

A connection stays open across requests (`tenancy.connections`: borrowed from the process's
pool and given back), and the code's schema version does not change while a process lives, so
checking at open covers every request on that connection, at the cost of one control-plane
lookup and one read of `django_migrations` per open. A quarantine recorded after a connection
opened is seen by connections opened later; the open ones are closed by whatever marks the
file suspected (`tenancy.faults`) or by `release`:

- quarantined in the registry (read fresh, not memoised) → 503 `database_quarantined`;
- behind the code's migrations → migrated right there under the node's rollout lock (waiting at
  most `TENANCY_MIGRATE_ON_OPEN_WAIT_S`; the cheap path for databases a rollout has not reached
  yet), or 503 `schema_migrating` with `Retry-After` while a rollout holds the lock.

A database is therefore never served by code that expects another schema (decision 0015).
"""

import logging

import redis
from django.conf import settings
from django.db import connections, router
from django.utils import timezone

from project.exceptions import ApplicationError
from tenancy import faults
from tenancy.connections import release
from tenancy.exceptions import DatabaseQuarantined, RolloutLocked, SchemaMigrating
from tenancy.paths import absolute
from tenancy.rollout import rollout_lock
from tenancy.scopes import Scope
from tenancy.templates import code_migrations, code_version, migrate_file
from tenants.models import Database

logger = logging.getLogger(__name__)


def database_checked_at_open(*, alias: str, database: Database) -> None:
    """Check the database just opened as `alias`; on refusal close it again and raise."""
    try:
        _check(alias, database)
    except BaseException:
        release(alias)
        raise


def _quarantined(database: Database) -> DatabaseQuarantined:
    why = database.last_error[:200] or "see the registry"
    return DatabaseQuarantined(
        f"This {database.kind} database is quarantined ({why}); an operator must fix it "
        "(`manage.py dbcheck`) and rerun `manage.py migrate_tenants`."
    )


# The registry row, read fresh at every open: one plain query (the ORM's compiler costs several
# times the query itself, and a request that opens a database pays it).
_STATE_SQL = f"SELECT state, last_error FROM {Database._meta.db_table} WHERE id = %s"


def _check(alias: str, database: Database) -> None:
    with connections[router.db_for_read(Database)].cursor() as cursor:
        cursor.execute(_STATE_SQL, [database.pk])
        fresh = cursor.fetchone()
    if fresh is None or fresh[0] == Database.State.QUARANTINED:
        database.state, database.last_error = fresh or (Database.State.QUARANTINED, "")
        raise _quarantined(database)
    with connections[alias].cursor() as cursor:
        cursor.execute("SELECT app, name FROM django_migrations")
        applied = frozenset(cursor.fetchall())
    if code_migrations() <= applied:
        return
    # Migrated through a connection of its own; this one holds no transaction, so it does not
    # block the migration, and SQLite makes it see the new schema afterwards.
    _migrate_on_open(database)


# SQLite result codes that say "this process or this disk, now", not "this migration".
_TRANSIENT_SQLITE = (
    faults.SQLITE_BUSY,
    faults.SQLITE_LOCKED,
    faults.SQLITE_NOMEM,
    faults.SQLITE_IOERR,
    faults.SQLITE_FULL,
    faults.SQLITE_CANTOPEN,
)


def _transient(exc: BaseException) -> bool:
    """Tell whether a failed migrate-on-open may succeed later unchanged (never quarantine)."""
    if isinstance(exc, redis.RedisError | ApplicationError | OSError):
        return True  # Redis (the rollout lock), a 503 of ours (descriptors), the disk
    return faults.descriptors_exhausted(exc) or faults.primary_code(exc) in _TRANSIENT_SQLITE


def _migrate_on_open(database: Database) -> None:
    retry_after = settings.TENANCY_SCHEMA_RETRY_AFTER_S
    busy = SchemaMigrating(
        f"This {database.kind} database is being migrated to the code's schema; retry in "
        f"{retry_after} s.",
        retry_after_s=retry_after,
    )
    if not settings.TENANCY_MIGRATE_ON_OPEN:
        raise busy
    try:
        with rollout_lock(
            purpose=f"migrate on open of {database.path}",
            wait_s=settings.TENANCY_MIGRATE_ON_OPEN_WAIT_S,
        ):
            migrate_file(absolute(database.path), Scope(database.kind), create=False)
    except RolloutLocked:
        raise busy from None
    except Exception as exc:
        if _transient(exc):
            logger.warning(
                "migrating %s on open failed for now (%r); retry later", database.path, exc
            )
            raise busy from exc
        logger.exception("migrating %s on open failed; quarantined", database.path)
        error = f"migrate on open: {type(exc).__name__}: {exc}"
        Database.objects.filter(pk=database.pk).update(
            state=Database.State.QUARANTINED, last_error=error[:4000]
        )
        database.state, database.last_error = Database.State.QUARANTINED, error
        raise _quarantined(database) from exc
    Database.objects.filter(pk=database.pk).update(
        schema_version=code_version(), state=Database.State.READY, migrated_at=timezone.now()
    )
