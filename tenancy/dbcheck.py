"""Check the registry against the disk and every registered database file (`manage.py dbcheck`).

Findings, each naming a path:
- `orphan_file`: a database file under `DATA_DIR/tenants/` with no registry row (what a
  provisioning killed between its copy and its registration leaves, decision 0007); files younger
  than `orphan_min_age_s` are left alone, a provisioning may be registering them right now;
- `missing_file`: a registry row whose file is gone;
- `damaged`: `PRAGMA quick_check` (`integrity_check` when deep) is not "ok", or the file is
  not a readable database;
- `behind`: the file lacks migrations the code has (`migrate_tenants` or the first request
  will apply them);
- `quarantined`: the registry already refuses to serve it.

With `fix`, orphan files are removed and missing or damaged databases quarantined (so they
answer 503 rather than fail in odd ways). Files are opened read-only otherwise.
"""

import sqlite3
import time
from collections.abc import Callable
from contextlib import closing, suppress
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from django.conf import settings

from tenancy import faults
from tenancy.paths import absolute
from tenancy.templates import Node, code_migrations, remove_database_files
from tenants.models import Database


@dataclass(frozen=True)
class Finding:
    kind: str
    path: str
    detail: str
    fixed: bool = False


@dataclass
class DbcheckReport:
    checked: int = 0
    bytes_total: int = 0
    databases: list[dict[str, Any]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "checked": self.checked,
            "bytes_total": self.bytes_total,
            "databases": self.databases,
            "findings": [asdict(f) for f in self.findings],
        }


def _size(path: Path) -> int:
    total = 0
    for suffix in ("", "-wal"):
        with suppress(OSError):
            total += path.with_name(path.name + suffix).stat().st_size
    return total


def _inspect(path: Path, *, deep: bool) -> tuple[list[str], frozenset[Node]]:
    """Return the check's problems (empty when "ok") and the file's applied migrations."""
    with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True, timeout=5)) as conn:
        pragma = "integrity_check" if deep else "quick_check"
        problems = [row[0] for row in conn.execute(f"PRAGMA {pragma}(20)")]
        applied = frozenset(conn.execute("SELECT app, name FROM django_migrations").fetchall())
    return ([] if problems == ["ok"] else problems), applied


def _quarantine(database_id: int, error: str) -> None:
    Database.objects.filter(id=database_id).update(
        state=Database.State.QUARANTINED, last_error=f"dbcheck: {error}"[:4000]
    )


def databases_checked(
    *,
    deep: bool = False,
    fix: bool = False,
    orphan_min_age_s: float = 600.0,
    on_total: Callable[[int], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> DbcheckReport:
    """Check this node's registry and database files; with `fix`, repair what is safe."""
    report = DbcheckReport()
    rows = list(
        Database.objects.filter(home_node=settings.HOME_NODE)
        .order_by("id")
        .values_list("id", "path", "kind", "schema_version", "state", "last_error")
    )
    root = Path(settings.DATA_DIR)
    registered = {path for _, path, *_ in rows}
    on_disk = sorted(
        str(p.relative_to(root)) for p in (root / "tenants").glob("**/*.sqlite3") if p.is_file()
    )
    if on_total:
        on_total(len(rows) + len(on_disk))
    code = code_migrations()

    for database_id, relpath, kind, version, state, last_error in rows:
        path = absolute(relpath)
        size = _size(path)
        report.checked += 1
        report.bytes_total += size
        report.databases.append(
            {
                "path": relpath,
                "kind": kind,
                "bytes": size,
                "schema_version": version,
                "state": state,
            }
        )
        if state == Database.State.QUARANTINED:
            report.findings.append(Finding("quarantined", relpath, last_error[:300]))
        if not path.exists():
            if fix and state != Database.State.QUARANTINED:
                _quarantine(database_id, "file missing")
            report.findings.append(Finding("missing_file", relpath, "registered, no file", fix))
        else:
            try:
                problems, applied = _inspect(path, deep=deep)
            except sqlite3.Error as exc:
                if faults.classify(exc) is not faults.Fault.DAMAGED:
                    # Busy, locked, out of descriptors, unreadable for now: not damage.
                    report.findings.append(
                        Finding("unreadable", relpath, f"{type(exc).__name__}: {exc}")
                    )
                    if on_progress:
                        on_progress(1)
                    continue
                problems, applied = [f"{type(exc).__name__}: {exc}"], code
            if problems:
                detail = "; ".join(problems)[:1000]
                if fix and state != Database.State.QUARANTINED:
                    _quarantine(database_id, detail)
                report.findings.append(Finding("damaged", relpath, detail, fix))
            elif not code <= applied:
                pending = sorted(f"{app}.{name}" for app, name in code - applied)
                report.findings.append(
                    Finding("behind", relpath, f"{len(pending)} pending: {', '.join(pending[:5])}")
                )
        if on_progress:
            on_progress(1)

    now = time.time()
    for relpath in on_disk:
        if relpath not in registered:
            path = root / relpath
            with suppress(OSError):
                if now - path.stat().st_mtime >= orphan_min_age_s:
                    detail = f"{_size(path)} bytes, no registry row"
                    if fix:
                        remove_database_files(path)
                        with suppress(OSError):
                            path.parent.rmdir()  # the tenant's folder, when it was its only file
                    report.findings.append(Finding("orphan_file", relpath, detail, fix))
        if on_progress:
            on_progress(1)
    return report
