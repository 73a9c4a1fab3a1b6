"""Roll the code's migrations across every registered tenant (and run) database.

The registry in the control plane is the ledger: each database's `schema_version` names the
exact set of migrations it has, so a run with nothing to do reads one query and stops. One
rollout runs at a time per node (`tenancy.rollout`).

Databases at the same old version have the same schema, so the SQL that moves them forward is
the same. Per (old version, kind) Django's executor migrates a scratch copy of one of them (the
sample) while every statement it runs is recorded. SQLite itself then says which statements had
an effect: they are run again on a second copy under an authorizer callback, which refuses
transaction control and the executor's own `django_migrations` rows and reports every write
(DDL and DML alike, whatever the statement's first word) and every `PRAGMA` that set a value.
The recording replayed on that copy must leave the executor's schema, `user_version` and rows;
then it is replayed in each database in one `BEGIN IMMEDIATE` transaction, which first reads the
database's applied set and last compares the database with the scratch copy (schema, triggers,
`user_version`, `foreign_key_check`). Groups with `RunPython` go through Django's executor per
database, also in one `BEGIN IMMEDIATE` transaction (`tenancy.templates.migrate_file`).

Failures are isolated: a sample whose migration fails is quarantined and the next database
becomes the sample; a database that fails is quarantined with its error; a busy database is
retried with backoff and left pending (never quarantined) if it stays busy.
"""

import hashlib
import sqlite3
import tempfile
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass, field
from enum import Enum
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.backends.sqlite3._functions import register as register_functions
from django.db.backends.sqlite3.base import SQLiteCursorWrapper
from django.db.migrations.loader import MigrationLoader
from django.db.models import Q
from django.utils import timezone

from tenancy import connections as tenant_connections
from tenancy import faults
from tenancy.exceptions import ReplayMismatch
from tenancy.paths import absolute
from tenancy.rollout import rollout_lock
from tenancy.scopes import Scope
from tenancy.templates import Node, code_migrations, code_version, ensure_template, migrate_file
from tenants.models import Database

BATCH_SIZE = 64
MAX_FAILED_SAMPLES = 5  # then the group goes through the executor, each database on its own

MIGRATIONS_TABLE = "django_migrations"
_WRITES = frozenset(
    getattr(sqlite3, name)
    for name in (
        "SQLITE_INSERT",
        "SQLITE_UPDATE",
        "SQLITE_DELETE",
        "SQLITE_ALTER_TABLE",
        "SQLITE_REINDEX",
        "SQLITE_ANALYZE",
        "SQLITE_CREATE_INDEX",
        "SQLITE_CREATE_TABLE",
        "SQLITE_CREATE_TEMP_INDEX",
        "SQLITE_CREATE_TEMP_TABLE",
        "SQLITE_CREATE_TEMP_TRIGGER",
        "SQLITE_CREATE_TEMP_VIEW",
        "SQLITE_CREATE_TRIGGER",
        "SQLITE_CREATE_VIEW",
        "SQLITE_CREATE_VTABLE",
        "SQLITE_DROP_INDEX",
        "SQLITE_DROP_TABLE",
        "SQLITE_DROP_TEMP_INDEX",
        "SQLITE_DROP_TEMP_TABLE",
        "SQLITE_DROP_TEMP_TRIGGER",
        "SQLITE_DROP_TEMP_VIEW",
        "SQLITE_DROP_TRIGGER",
        "SQLITE_DROP_VIEW",
        "SQLITE_DROP_VTABLE",
    )
)
_TABLE_WRITES = frozenset({sqlite3.SQLITE_INSERT, sqlite3.SQLITE_UPDATE, sqlite3.SQLITE_DELETE})
_CONTROL = frozenset({sqlite3.SQLITE_TRANSACTION, sqlite3.SQLITE_SAVEPOINT})


@dataclass(frozen=True)
class Statement:
    sql: str
    params: Any
    many: bool


@dataclass(frozen=True)
class Shape:
    """What a database must look like after the replay: its schema objects and user_version."""

    objects: tuple[tuple[str, str, str], ...]  # (type, name, sql) from sqlite_master
    user_version: int


@dataclass(frozen=True)
class Plan:
    """How to move databases from `from_nodes` to the code's migrations."""

    from_nodes: frozenset[Node]
    target_nodes: frozenset[Node]
    statements: "tuple[Statement, ...] | None"  # None: Django's executor, one by one
    why_executor: str = ""
    expected: Shape | None = None


@dataclass(frozen=True)
class Target:
    database_id: int
    path: str
    kind: str
    schema_version: str


@dataclass(frozen=True)
class Outcome:
    database_id: int
    path: str
    error: str = ""
    already_current: bool = False
    busy: bool = False  # still busy when the retries ran out: left pending, not quarantined


@dataclass
class FleetReport:
    target_version: str
    total: int = 0
    migrated: int = 0
    already_current: int = 0
    fast_path_groups: int = 0
    executor_groups: int = 0
    executor_reasons: list[str] = field(default_factory=list)
    quarantined: list[Outcome] = field(default_factory=list)
    busy: list[Outcome] = field(default_factory=list)


def describe(exc: BaseException) -> str:
    return f"{type(exc).__module__}.{type(exc).__name__}: {exc}"


def databases_pending(*, tenant_slug: str | None = None) -> "list[Target]":
    """Return this node's registered databases whose ledger version is not the code's."""
    rows = Database.objects.filter(home_node=settings.HOME_NODE).exclude(
        schema_version=code_version()
    )
    if tenant_slug is not None:
        rows = rows.filter(
            Q(tenant_owner__slug=tenant_slug) | Q(run_owner__tenant__slug=tenant_slug)
        )
    fields = ("id", "path", "kind", "schema_version")
    return [Target(*row) for row in rows.order_by("id").values_list(*fields)]


def fleet_migrate(
    *,
    tenant_slug: str | None = None,
    parallel: int = 1,
    lock_wait_s: float = 60.0,
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> FleetReport:
    """Migrate every pending database under the node's rollout lock; record each outcome.

    Raises `RolloutLocked` if another rollout still holds the lock after `lock_wait_s`.
    """
    with rollout_lock(purpose="migrate_tenants", wait_s=lock_wait_s) as keep_alive:
        return _fleet_migrate(
            tenant_slug=tenant_slug,
            parallel=parallel,
            keep_alive=keep_alive,
            on_progress=on_progress,
            on_total=on_total,
        )


def _fleet_migrate(
    *,
    tenant_slug: str | None,
    parallel: int,
    keep_alive: Callable[[], None],
    on_progress: Callable[[int], None] | None,
    on_total: Callable[[int], None] | None,
) -> FleetReport:
    report = FleetReport(target_version=code_version())
    for kind in (Scope.TENANT, Scope.RUN):
        ensure_template(kind)
    # Read under the lock: a rollout that just finished has already updated the ledger.
    pending = databases_pending(tenant_slug=tenant_slug)
    report.total = len(pending)
    if on_total:
        on_total(report.total)
    if not pending:
        return report

    groups: dict[tuple[str, str], list[Target]] = defaultdict(list)
    for target in pending:
        groups[(target.schema_version, target.kind)].append(target)

    work: list[tuple[list[Target], Plan]] = []
    for (_, kind_name), members in groups.items():
        plan, failed_samples = plan_for(members, Scope(kind_name))
        keep_alive()
        if failed_samples:
            _record(failed_samples, report)
            if on_progress:
                on_progress(len(failed_samples))
            failed = {o.database_id for o in failed_samples}
            members = [m for m in members if m.database_id not in failed]
        if plan.statements is None:
            report.executor_groups += 1
            report.executor_reasons.append(plan.why_executor)
        else:
            report.fast_path_groups += 1
        work.extend((batch, plan) for batch in _batches(members, BATCH_SIZE))

    for outcomes in _run(work, parallel):
        _record(outcomes, report)
        keep_alive()
        if on_progress:
            on_progress(len(outcomes))
    return report


def _batches(items: list[Target], size: int) -> Iterator[list[Target]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _run(work: list[tuple[list[Target], Plan]], parallel: int) -> Iterator[list[Outcome]]:
    if parallel <= 1:
        for batch, plan in work:
            yield migrate_batch(batch, plan)
        return
    # Children must not inherit open SQLite handles; each opens what it needs.
    connections.close_all()
    tenant_connections.close_all()
    with ProcessPoolExecutor(max_workers=parallel, mp_context=get_context("fork")) as pool:
        futures: list[Future[list[Outcome]]] = [
            pool.submit(migrate_batch, batch, plan) for batch, plan in work
        ]
        for future in as_completed(futures):
            yield future.result()


def _record(outcomes: list[Outcome], report: FleetReport) -> None:
    now = timezone.now()
    done = [o.database_id for o in outcomes if not o.error]
    if done:
        Database.objects.filter(id__in=done).update(
            schema_version=report.target_version,
            state=Database.State.READY,
            last_error="",
            migrated_at=now,
        )
    for outcome in outcomes:
        if outcome.busy:
            report.busy.append(outcome)  # the ledger keeps its old version: pending next run
        elif outcome.error:
            Database.objects.filter(id=outcome.database_id).update(
                state=Database.State.QUARANTINED, last_error=outcome.error[:4000]
            )
            report.quarantined.append(outcome)
        elif outcome.already_current:
            report.already_current += 1
        else:
            report.migrated += 1


# --- Planning -----------------------------------------------------------------------------------


def plan_for(members: list[Target], kind: Scope) -> tuple[Plan, list[Outcome]]:
    """Compile and check the SQL that moves this group; return it and the failed samples.

    A sample whose migration fails (any error: Django's, SQLite's, a missing file) is
    quarantined and the next member becomes the sample; a busy one is skipped, not blamed.
    """
    target_nodes = code_migrations()
    failed: list[Outcome] = []
    for member in members:
        if len(failed) >= MAX_FAILED_SAMPLES:
            break
        try:
            return _plan_from_sample(absolute(member.path), kind, target_nodes), failed
        except Exception as exc:
            if not faults.is_busy(exc):
                failed.append(
                    Outcome(member.database_id, member.path, error=f"as sample: {describe(exc)}")
                )
    why = f"no database of the group could be planned ({len(failed)} failed as samples)"
    return Plan(frozenset(), target_nodes, None, why), failed


def _plan_from_sample(sample: Path, kind: Scope, target_nodes: frozenset[Node]) -> Plan:
    if not sample.exists():
        raise FileNotFoundError(f"database file {sample} is missing")
    scratch_dir = Path(settings.DATA_DIR) / "tmp"
    scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_dir) as scratch:
        by_executor = Path(scratch) / "executor.sqlite3"
        by_sql = Path(scratch) / "sql.sqlite3"
        _snapshot(sample, by_executor)
        _snapshot(sample, by_sql)
        with _open(by_sql) as sample_conn:
            from_nodes = _applied(sample_conn)

        captured: list[Statement] = []

        def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            captured.append(Statement(sql, params, many))
            return execute(sql, params, many, context)

        migrate_file(by_executor, kind, create=False, record=capture)
        with _open(by_executor) as conn:
            expected = _shape(conn)
        opaque = _opaque(target_nodes - from_nodes)
        if opaque:
            why = f"not expressible as SQL: {opaque}"
            return Plan(from_nodes, target_nodes, None, why, expected)

        try:
            with _open(by_sql) as conn:
                effective = _effective(conn, captured)
            plan = Plan(from_nodes, target_nodes, effective, "", expected)
            with _open(by_sql) as conn:
                _apply_statements(conn, plan)
        except (sqlite3.Error, ReplayMismatch) as exc:
            why = f"the recorded SQL does not replay like the executor ({describe(exc)})"
            return Plan(from_nodes, target_nodes, None, why, expected)
        if _rows_digest(by_sql) != _rows_digest(by_executor):
            why = "the recorded SQL leaves other rows than the executor"
            return Plan(from_nodes, target_nodes, None, why, expected)
        return plan


def _opaque(nodes: Iterable[Node]) -> list[str]:
    """Return the migrations among `nodes` that hold operations with no SQL form (RunPython)."""
    graph = MigrationLoader(None, ignore_no_migrations=True).graph
    return sorted(
        f"{app}.{name}"
        for app, name in nodes
        if any(not op.reduces_to_sql for op in graph.nodes[(app, name)].operations)
    )


def _effective(conn: sqlite3.Connection, captured: list[Statement]) -> tuple[Statement, ...]:
    """Return the recorded statements that have an effect, in order, as SQLite judges them.

    Each statement runs again (same order, same data) under an authorizer that refuses
    transaction control and writes to `django_migrations` (the replay does both itself) and
    notes every write or schema change. A `PRAGMA` has an effect when it sets a value, i.e.
    answers no result columns (`PRAGMA user_version = 3`, not `PRAGMA table_info(t)`).
    Rolled back at the end: this copy only classifies.
    """
    actions: list[int] = []

    def authorize(action: int, arg1: Any, arg2: Any, db: Any, source: Any) -> int:
        if action in _CONTROL or (action in _TABLE_WRITES and arg1 == MIGRATIONS_TABLE):
            return sqlite3.SQLITE_DENY
        actions.append(action)
        return sqlite3.SQLITE_OK

    kept: list[Statement] = []
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        cursor = conn.cursor(SQLiteCursorWrapper)
        conn.set_authorizer(authorize)
        for statement in captured:
            actions.clear()
            try:
                _execute(cursor, statement)
            except sqlite3.DatabaseError as exc:
                if exc.sqlite_errorcode == sqlite3.SQLITE_AUTH:
                    continue  # refused above: transaction control or the migrations ledger
                raise
            writes = any(action in _WRITES for action in actions)
            sets_pragma = sqlite3.SQLITE_PRAGMA in actions and cursor.description is None
            if writes or sets_pragma:
                kept.append(statement)
    finally:
        conn.set_authorizer(None)
        conn.execute("ROLLBACK")
        conn.execute("PRAGMA foreign_keys = ON")
    return tuple(kept)


def _execute(cursor: sqlite3.Cursor, statement: Statement) -> None:
    if statement.many:
        cursor.executemany(statement.sql, statement.params)
    else:
        cursor.execute(statement.sql, statement.params)


def _snapshot(source: Path, destination: Path) -> None:
    with _open(source) as src, closing(sqlite3.connect(destination)) as dst:
        src.backup(dst)


def _shape(conn: sqlite3.Connection) -> Shape:
    objects = conn.execute(
        "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
        "ORDER BY type, name"
    ).fetchall()
    (user_version,) = conn.execute("PRAGMA user_version").fetchone()
    return Shape(tuple(objects), user_version)


def _differences(actual: Shape, expected: Shape) -> list[str]:
    """Name how `actual` differs from `expected` (empty when they match)."""
    have = {(kind, name): sql for kind, name, sql in actual.objects}
    want = {(kind, name): sql for kind, name, sql in expected.objects}
    problems = [f"missing {kind} {name}" for kind, name in sorted(want.keys() - have.keys())]
    problems += [f"unexpected {kind} {name}" for kind, name in sorted(have.keys() - want.keys())]
    problems += [
        f"{kind} {name} differs"
        for (kind, name) in sorted(want.keys() & have.keys())
        if want[(kind, name)] != have[(kind, name)]
    ]
    if actual.user_version != expected.user_version:
        problems.append(f"user_version {actual.user_version}, expected {expected.user_version}")
    return problems


def _rows_digest(path: Path) -> str:
    """Hash every row of every table but the migrations ledger (its timestamps differ)."""
    digest = hashlib.sha256()
    with _open(path) as conn:
        tables = [
            name
            for (name,) in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name"
            )
            if name != MIGRATIONS_TABLE
        ]
        for table in tables:
            quoted = '"' + table.replace('"', '""') + '"'
            rows = sorted(repr(row) for row in conn.execute(f"SELECT * FROM {quoted}"))
            digest.update(f"{table}:{len(rows)}\n".encode())
            for row in rows:
                digest.update(row.encode())
    return digest.hexdigest()


# --- Applying (runs in worker processes) ---------------------------------------------------------


def _open(path: Path) -> "closing[sqlite3.Connection]":
    """Return a plain sqlite3 connection to an existing database file, closed on exit."""
    conn = sqlite3.connect(
        f"{path.as_uri()}?mode=rw",
        uri=True,
        timeout=settings.SQLITE_BUSY_TIMEOUT_S,
        isolation_level=None,
        cached_statements=0,  # every statement is prepared again, so the authorizer sees it
    )
    register_functions(conn)  # as Django's connections: recorded SQL may call them
    # As every connection of the project; the checkpoint when it closes fsyncs the file.
    conn.execute(f"PRAGMA synchronous = {settings.SQLITE_SYNCHRONOUS}")
    return closing(conn)


def _applied(conn: sqlite3.Connection) -> frozenset[Node]:
    return frozenset(conn.execute(f"SELECT app, name FROM {MIGRATIONS_TABLE}").fetchall())


class Applied(Enum):
    DONE = "done"
    ALREADY_CURRENT = "already current"
    ELSEWHERE = "at another version than the group"  # the executor takes it


def _apply_statements(conn: sqlite3.Connection, plan: Plan) -> Applied:
    """Replay the plan in one `BEGIN IMMEDIATE` that first reads the applied set.

    Before committing, the database must match the scratch copy (schema objects, triggers
    included, and user_version) and pass `foreign_key_check`, or `ReplayMismatch` names why.
    """
    assert plan.statements is not None and plan.expected is not None
    applied_at = timezone.now().replace(tzinfo=None).isoformat(" ")
    rows = [(app, name, applied_at) for app, name in sorted(plan.target_nodes - plan.from_nodes)]
    # As Django's SQLite schema editor does: table rebuilds need foreign keys off, then a check.
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        applied = _applied(conn)
        if plan.target_nodes <= applied:
            conn.execute("ROLLBACK")
            return Applied.ALREADY_CURRENT
        if applied != plan.from_nodes:
            conn.execute("ROLLBACK")
            return Applied.ELSEWHERE
        # Django's cursor class: the recorded SQL uses its "format" placeholders.
        cursor = conn.cursor(SQLiteCursorWrapper)
        for statement in plan.statements:
            _execute(cursor, statement)
        conn.executemany(
            f"INSERT INTO {MIGRATIONS_TABLE} (app, name, applied) VALUES (?, ?, ?)", rows
        )
        problems = _differences(_shape(conn), plan.expected)
        violations = conn.execute("PRAGMA foreign_key_check").fetchall()
        if violations:
            problems.append(f"foreign key violations {violations[:5]}")
        if problems:
            raise ReplayMismatch(
                "after the replay the database differs from the scratch copy: "
                + "; ".join(problems)
            )
        conn.execute("COMMIT")
        return Applied.DONE
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def migrate_one(target: Target, plan: Plan) -> Outcome:
    """Bring one database to the code's migrations; raise only busy/locked errors."""
    path = absolute(target.path)
    if not path.exists():
        raise FileNotFoundError(f"database file {path} is missing")
    if plan.statements is not None:
        with _open(path) as conn:
            result = _apply_statements(conn, plan)
        if result is Applied.ALREADY_CURRENT:
            return Outcome(target.database_id, target.path, already_current=True)
        if result is Applied.DONE:
            return Outcome(target.database_id, target.path)
    applied = migrate_file(path, Scope(target.kind), create=False)
    return Outcome(target.database_id, target.path, already_current=not applied)


def migrate_batch(batch: Iterable[Target], plan: Plan) -> list[Outcome]:
    """Migrate a batch; busy databases are retried with backoff after the others, not blamed."""
    outcomes: dict[int, Outcome] = {}
    waiting = list(batch)
    deadline = time.monotonic() + settings.TENANCY_ROLLOUT_BUSY_RETRY_S
    delay = 0.05
    try:
        while waiting:
            still_busy: list[Target] = []
            for target in waiting:
                try:
                    outcomes[target.database_id] = migrate_one(target, plan)
                except Exception as exc:
                    if faults.is_busy(exc):
                        still_busy.append(target)
                        outcomes[target.database_id] = Outcome(
                            target.database_id, target.path, error=describe(exc), busy=True
                        )
                    else:
                        outcomes[target.database_id] = Outcome(
                            target.database_id, target.path, error=describe(exc)
                        )
                finally:
                    tenant_connections.close_all()
            waiting = still_busy
            if not waiting or time.monotonic() + delay > deadline:
                break
            time.sleep(delay)  # backoff before the next attempt, not synchronisation
            delay = min(delay * 2, 2.0)
    finally:
        tenant_connections.close_all()
    return list(outcomes.values())


__all__ = ["FleetReport", "databases_pending", "fleet_migrate"]
