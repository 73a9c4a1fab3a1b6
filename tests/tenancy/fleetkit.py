"""Helpers of the fleet tests: stages, the ledger, files, real `migrate_tenants` processes."""

import sqlite3
import subprocess
import time
from collections.abc import Callable
from contextlib import closing
from pathlib import Path
from typing import Any

from tests.processes import PYTHON, ROOT, manage, project_env


def stage(env: dict[str, str], name: str) -> dict[str, str]:
    return {**env, "DJANGO_SETTINGS_MODULE": "tests.fleetapp.settings", "FLEET_STAGE": name}


def fleet_under_v1(data_dir: Path, **provision: Any) -> dict[str, str]:
    """Provision a fleet with rows under stage v1 (`tests.fleetapp.provision.provision`)."""
    v1 = stage(project_env(data_dir), "v1")
    manage(v1, "migrate", "--no-input", "-v", "0")
    args = ", ".join(f"{k}={v!r}" for k, v in provision.items())
    manage(v1, "shell", "-c", f"from tests.fleetapp.provision import provision; provision({args})")
    return v1


def deploy(env: dict[str, str], name: str) -> dict[str, str]:
    """New code: the control plane migrated to stage `name` (tenant databases untouched)."""
    new = stage(env, name)
    manage(new, "migrate", "--no-input", "-v", "0")
    return new


def ledger(data_dir: Path) -> list[tuple[str, str, str, str]]:
    with closing(sqlite3.connect(data_dir / "control.sqlite3")) as conn:
        return conn.execute(
            "SELECT path, schema_version, state, last_error FROM tenants_database ORDER BY id"
        ).fetchall()


def query(path: Path, sql: str, params: tuple = ()) -> list[tuple]:
    with closing(sqlite3.connect(path)) as conn:
        return conn.execute(sql, params).fetchall()


def columns(path: Path, table: str = "fleetapp_note") -> set[str]:
    return {row[1] for row in query(path, f"PRAGMA table_info({table})")}


def triggers(path: Path) -> dict[str, str]:
    return dict(query(path, "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'"))


def duplicate_ledger_rows(path: Path) -> list[tuple]:
    return query(
        path,
        "SELECT app, name, count(*) FROM django_migrations GROUP BY app, name HAVING count(*) > 1",
    )


def start_manage(env: dict[str, str], *args: str, log: Path) -> subprocess.Popen:
    """Start `manage.py` in the background, output to `log` (never an unread pipe)."""
    with log.open("wb") as out:
        return subprocess.Popen(
            [PYTHON, str(ROOT / "manage.py"), *args],
            env=env,
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def wait_until(condition: Callable[[], bool], what: str, deadline_s: float = 120.0) -> None:
    deadline = time.monotonic() + deadline_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {deadline_s}s waiting for {what}")
