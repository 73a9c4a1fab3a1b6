"""Roll the code's migrations across every registered tenant (and run) database.

The registry in the control plane is the ledger: each database's `schema_version` names the
exact set of migrations it has, so a run with nothing to do reads one query and stops.

Databases at the same old version have the same schema, so the SQL that moves them forward is
the same. It is recorded once per (old version, kind) while Django's executor migrates a scratch
copy of one of them, checked by replaying it on a second copy and comparing the two schemas,
then replayed in each database in one `BEGIN IMMEDIATE` transaction together with the
`django_migrations` rows (~1 ms a database instead of ~30 ms through the executor). Migrations
that cannot be written as SQL (`RunPython`), or compile to SQL that does not reproduce the
executor's schema, fall back to Django's executor for every database of that group.

Every step is idempotent: a database that already has the target migrations (say, the previous
run was killed after its commit but before the ledger write) only gets its ledger row updated.
A database that fails is quarantined with its error and the others proceed.
"""

import sqlite3
import tempfile
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from contextlib import closing
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from django.conf import settings
from django.db import connections
from django.db.backends.sqlite3.base import SQLiteCursorWrapper
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Q
from django.utils import timezone

from tenancy import connections as tenant_connections
from tenancy.paths import absolute, scratch_alias
from tenancy.scopes import Scope
from tenancy.templates import Node, code_migrations, code_version, ensure_template, migrate_file
from tenants.models import Database

BATCH_SIZE = 64


@dataclass(frozen=True)
class Statement:
    sql: str
    params: Any
    many: bool


@dataclass(frozen=True)
class Plan:
    """How to move databases from `from_nodes` to the code's migrations."""

    from_nodes: frozenset[Node]
    target_nodes: frozenset[Node]
    statements: "tuple[Statement, ...] | None"  # None: Django's executor, one by one
    why_executor: str = ""


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
    on_progress: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
) -> FleetReport:
    """Migrate every pending database; record each outcome in the ledger as it lands."""
    report = FleetReport(target_version=code_version())
    for kind in (Scope.TENANT, Scope.RUN):
        ensure_template(kind)
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
        plan = plan_for(members, Scope(kind_name))
        if plan.statements is None:
            report.executor_groups += 1
            report.executor_reasons.append(plan.why_executor)
        else:
            report.fast_path_groups += 1
        work.extend((batch, plan) for batch in _batches(members, BATCH_SIZE))

    for outcomes in _run(work, parallel):
        _record(outcomes, report)
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
        if outcome.error:
            Database.objects.filter(id=outcome.database_id).update(
                state=Database.State.QUARANTINED, last_error=outcome.error[:4000]
            )
            report.quarantined.append(outcome)
        elif outcome.already_current:
            report.already_current += 1
        else:
            report.migrated += 1


# --- Planning -----------------------------------------------------------------------------------


def plan_for(members: list[Target], kind: Scope) -> Plan:
    """Compile and check the SQL that moves this group, from the first readable member."""
    target_nodes = code_migrations()
    for member in members[:5]:
        try:
            return _plan_from_sample(absolute(member.path), kind, target_nodes)
        except sqlite3.DatabaseError:
            continue  # an unreadable sample; that database will be quarantined on its own
    return Plan(frozenset(), target_nodes, None, "no readable database in the group")


def _plan_from_sample(sample: Path, kind: Scope, target_nodes: frozenset[Node]) -> Plan:
    scratch_dir = Path(settings.DATA_DIR) / "tmp"
    scratch_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=scratch_dir) as scratch:
        by_executor = Path(scratch) / "executor.sqlite3"
        by_sql = Path(scratch) / "sql.sqlite3"
        _snapshot(sample, by_executor)
        _snapshot(sample, by_sql)
        with _open(by_sql) as sample_conn:
            from_nodes = _applied(sample_conn)

        alias = scratch_alias(kind)
        conn = tenant_connections.connection_for(alias, by_executor)
        captured: list[tuple[str, Any, bool]] = []

        def capture(execute: Any, sql: str, params: Any, many: bool, context: Any) -> Any:
            captured.append((sql, params, many))
            return execute(sql, params, many, context)

        try:
            executor = MigrationExecutor(conn)
            targets = executor.loader.graph.leaf_nodes()
            opaque = [
                f"{m.app_label}.{m.name}"
                for m, _ in executor.migration_plan(targets)
                if any(not op.reduces_to_sql for op in m.operations)
            ]
            with conn.execute_wrapper(capture):
                executor.migrate(targets)
        finally:
            tenant_connections.release(alias)
        if opaque:
            return Plan(from_nodes, target_nodes, None, f"not expressible as SQL: {opaque}")
        statements = tuple(
            Statement(sql, params, many) for sql, params, many in captured if _replayable(sql)
        )
        plan = Plan(from_nodes, target_nodes, statements)
        with _open(by_sql) as sql_conn:
            _apply_statements(sql_conn, plan)
        if _fingerprint(by_sql) != _fingerprint(by_executor):
            return Plan(
                from_nodes,
                target_nodes,
                None,
                "recorded SQL does not reproduce the executor's schema",
            )
        return plan


_SCHEMA_VERBS = ("CREATE", "ALTER", "DROP", "INSERT", "UPDATE", "DELETE", "REPLACE")


def _replayable(sql: str) -> bool:
    """Keep the statements that change the schema or rows; transaction control, PRAGMAs,
    introspection and the executor's own `django_migrations` rows are done by the replay."""
    head = sql.lstrip().upper()
    return head.startswith(_SCHEMA_VERBS) and '"DJANGO_MIGRATIONS"' not in head[:40]


def _snapshot(source: Path, destination: Path) -> None:
    with _open(source) as src, sqlite3.connect(destination) as dst:
        src.backup(dst)


def _fingerprint(path: Path) -> tuple[list[tuple[str, str, str]], frozenset[Node]]:
    with _open(path) as conn:
        schema = conn.execute(
            "SELECT type, name, sql FROM sqlite_master WHERE name NOT LIKE 'sqlite_%' "
            "ORDER BY type, name"
        ).fetchall()
        return schema, _applied(conn)


# --- Applying (runs in worker processes) ---------------------------------------------------------


def _open(path: Path) -> "closing[sqlite3.Connection]":
    """Return a plain sqlite3 connection to an existing database file, closed on exit."""
    conn = sqlite3.connect(
        f"{path.as_uri()}?mode=rw",
        uri=True,
        timeout=settings.SQLITE_BUSY_TIMEOUT_S,
        isolation_level=None,
    )
    # As every connection of the project; the checkpoint when it closes fsyncs the file.
    conn.execute(f"PRAGMA synchronous = {settings.SQLITE_SYNCHRONOUS}")
    return closing(conn)


def _applied(conn: sqlite3.Connection) -> frozenset[Node]:
    return frozenset(conn.execute("SELECT app, name FROM django_migrations").fetchall())


def _apply_statements(conn: sqlite3.Connection, plan: Plan) -> None:
    assert plan.statements is not None
    applied_at = timezone.now().replace(tzinfo=None).isoformat(" ")
    rows = [(app, name, applied_at) for app, name in sorted(plan.target_nodes - plan.from_nodes)]
    # As Django's SQLite schema editor does: table rebuilds need foreign keys off, then a check.
    conn.execute("PRAGMA foreign_keys = OFF")
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Django's cursor class: the recorded SQL uses its "format" placeholders.
        cursor = conn.cursor(SQLiteCursorWrapper)
        for statement in plan.statements:
            if statement.many:
                cursor.executemany(statement.sql, statement.params)
            else:
                cursor.execute(statement.sql, statement.params)
        conn.executemany(
            "INSERT INTO django_migrations (app, name, applied) VALUES (?, ?, ?)", rows
        )
        violations = conn.execute("PRAGMA foreign_key_check").fetchall()
        if violations:
            raise sqlite3.IntegrityError(
                f"foreign key violations after migrating: {violations[:5]}"
            )
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA foreign_keys = ON")


def migrate_one(target: Target, plan: Plan) -> Outcome:
    """Bring one database to the code's migrations; never raises, reports the error instead."""
    path = absolute(target.path)
    try:
        if not path.exists():
            raise FileNotFoundError(f"database file {path} is missing")
        with _open(path) as conn:
            applied = _applied(conn)
            if plan.target_nodes <= applied:
                return Outcome(target.database_id, target.path, already_current=True)
            if plan.statements is not None and applied == plan.from_nodes:
                _apply_statements(conn, plan)
                return Outcome(target.database_id, target.path)
        migrate_file(path, Scope(target.kind), create=False)
        return Outcome(target.database_id, target.path)
    except Exception as exc:
        return Outcome(target.database_id, target.path, error=f"{type(exc).__name__}: {exc}")


def migrate_batch(batch: Iterable[Target], plan: Plan) -> list[Outcome]:
    try:
        return [migrate_one(target, plan) for target in batch]
    finally:
        tenant_connections.close_all()


__all__ = ["FleetReport", "databases_pending", "fleet_migrate"]
