"""Schema versions and pre-migrated templates for tenant and run databases.

A schema version names the full set of migrations in the code (a hash of every `app.name`
node), so a database's version in the registry says exactly which migrations it has. A template
is a database migrated once to that version, checkpointed and never opened for writing again; a
new tenant or run database is a plain copy of it (~0.6 ms, against ~7 ms or more for migrating).
"""

import functools
import hashlib
import os
import shutil
import sqlite3
import sys
from collections.abc import Callable, Iterable
from contextlib import closing, nullcontext
from pathlib import Path
from typing import Any

from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.db.migrations.executor import MigrationExecutor
from django.db.migrations.loader import MigrationLoader

from tenancy.connections import connection_for, release
from tenancy.ids import new_id
from tenancy.paths import scratch_alias, templates_dir
from tenancy.scopes import Scope

Node = tuple[str, str]


@functools.cache
def code_migrations() -> frozenset[Node]:
    """Return every migration node the code defines (cached for the process)."""
    return frozenset(MigrationLoader(None, ignore_no_migrations=True).graph.nodes)


def version_of(nodes: Iterable[Node]) -> str:
    """Return the schema version naming exactly this set of applied migrations."""
    text = "\n".join(sorted(f"{app}.{name}" for app, name in nodes))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@functools.cache
def code_version() -> str:
    """Return the schema version of the migrations in the code."""
    return version_of(code_migrations())


@functools.cache
def code_migrations_digest() -> str:
    """Return a hash of the source of every migration in the code (names and content).

    The schema version names migrations only; a template must also change when a migration's
    body is edited (a development habit, but a template built from the old body would be wrong).
    """
    loader = MigrationLoader(None, ignore_no_migrations=True)
    digest = hashlib.sha256()
    for key in sorted(loader.graph.nodes):
        migration = loader.graph.nodes[key]
        digest.update(f"{key[0]}.{key[1]}\n".encode())
        # The module the loader imported and the one defining the class (re-exports differ).
        modules = {f"{loader.migrations_module(key[0])[0]}.{key[1]}", type(migration).__module__}
        for name in sorted(modules):
            source = getattr(sys.modules.get(name), "__file__", None)
            if source:
                digest.update(Path(source).read_bytes())
    return digest.hexdigest()[:12]


def migrate_file(
    path: Path,
    kind: Scope,
    *,
    create: bool = True,
    record: Callable[..., Any] | None = None,
) -> list[str]:
    """Apply the code's pending migrations to the SQLite file at `path` with Django's executor.

    Everything happens in one `BEGIN IMMEDIATE` transaction that also reads the applied set,
    so two migrators can never both apply the same migration, and a failure leaves the file as
    it was. `record` is an `execute_wrapper` seeing every statement the executor runs. Return
    the migrations applied (`app.name`).
    """
    alias = scratch_alias(kind)
    conn = connection_for(alias, path, create=create)
    try:
        with conn.cursor() as cursor:
            # Outside the transaction, as Django's SQLite schema editor needs (it checks).
            cursor.execute("PRAGMA foreign_keys = OFF")
        try:
            with transaction.atomic(using=alias):
                executor = MigrationExecutor(conn)  # reads the applied set inside the transaction
                targets = executor.loader.graph.leaf_nodes()
                plan = executor.migration_plan(targets)
                if plan:
                    with conn.execute_wrapper(record) if record else nullcontext():
                        executor.migrate(targets, plan=plan)
                    conn.check_constraints()
        finally:
            with conn.cursor() as cursor:
                cursor.execute("PRAGMA foreign_keys = ON")
        with conn.cursor() as cursor:
            cursor.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        return [f"{m.app_label}.{m.name}" for m, _ in plan]
    finally:
        release(alias)


def template_path(kind: Scope) -> Path:
    """Return where the template of `kind` for the code's migrations (names and content) lives."""
    return templates_dir() / f"{kind.value}-{code_version()}-{code_migrations_digest()}.sqlite3"


# Checks every new template of a scope must pass before it is used (apps register them in their
# AppConfig.ready): a migration that broke an invariant stops the deploy at its first template
# build, before any tenant or run database is touched.
TemplateCheck = Callable[[sqlite3.Connection], list[str]]
template_checks: dict[Scope, list[TemplateCheck]] = {Scope.TENANT: [], Scope.RUN: []}


def _check_template(path: Path, kind: Scope) -> None:
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as conn:
        problems = [problem for check in template_checks[kind] for problem in check(conn)]
    if problems:
        raise ImproperlyConfigured(
            f"The {kind.value} template built from the code's migrations is unsafe: "
            + "; ".join(problems)
        )


def ensure_template(kind: Scope) -> tuple[Path, str]:
    """Return the template for `kind` at the code's schema version, building it if missing."""
    version = code_version()
    path = template_path(kind)
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        # Built under a private name, fsynced, then renamed: concurrent builders never see half
        # a file, and a crash never leaves a renamed template whose pages are not on disk.
        building = path.with_name(f".{path.name}.{os.getpid()}.{new_id('b')}")
        try:
            migrate_file(building, kind)
            _check_template(building, kind)
            with building.open("rb") as built:
                os.fsync(built.fileno())
            os.replace(building, path)
            fsync_path(path.parent)
        finally:
            remove_database_files(building)
    return path, version


def copy_template(template: Path, destination: Path) -> None:
    """Copy a template to `destination` durably; the destination must not exist yet.

    The template is checkpointed and closed (no -wal file), so a byte copy is a consistent
    database. Nothing opens the copy before it is registered, so it is written in place
    (created exclusively, fsynced with its directory) and removed again if anything fails.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with template.open("rb") as source, destination.open("xb") as target:
            shutil.copyfileobj(source, target)
            target.flush()
            os.fsync(target.fileno())
    except FileExistsError:
        raise  # somebody else's file: never remove it
    except BaseException:
        remove_database_files(destination)
        raise
    fsync_path(destination.parent)


def remove_database_files(path: Path) -> None:
    """Remove a database file with its -wal, -shm, -fault (decision 0017) and .lease (the
    embedded run lease, decision 0029) companions."""
    for suffix in ("", "-wal", "-shm", "-fault", ".lease"):
        path.with_name(path.name + suffix).unlink(missing_ok=True)


def fsync_path(path: Path) -> None:
    """fsync a file or a directory (a rename in it is durable once its directory is)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
