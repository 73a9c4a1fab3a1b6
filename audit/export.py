"""Exports of a tenant: its database as one consistent `.sqlite`, optionally with its runs.

The tenant database is copied under its write lock (`audit.snapshot`); with runs, a tarball
holds `tenant.sqlite3`, `runs/<run id>.sqlite3` for every run (the archive from storage, or a
snapshot of a live file) and `manifest.json` with each file's SHA-256.
"""

import json
import logging
import tarfile
from pathlib import Path

from django.core.files.storage import storages

from audit import chain
from audit.snapshot import file_sha256, snapshot
from runs.models import Run
from tenancy.context import tenant_context
from tenancy.ids import new_id
from tenancy.paths import absolute, scratch_dir
from tenants.models import Tenant

logger = logging.getLogger(__name__)
CHUNK = 4 * 1024 * 1024


def tenant_export(*, tenant: Tenant, destination: Path, with_runs: bool = False) -> Path:
    """Write the tenant's export to `destination` (a `.sqlite3`, or a `.tar` with runs)."""
    work = scratch_dir() / new_id("export")
    work.mkdir(parents=True)
    try:
        database = snapshot(absolute(tenant.database.path), work / "tenant.sqlite3")
        if not with_runs:
            database.path.replace(destination)
        else:
            _tarball(tenant, database.path, database.sha256, work, destination)
    finally:
        for leftover in work.iterdir():
            leftover.unlink()
        work.rmdir()
    try:
        with tenant_context(tenant):
            chain.tenant_append("export", {"runs": with_runs, "file": destination.name})
    except Exception:
        logger.exception("tenant %s exported; its audit entry could not be written", tenant.slug)
    return destination


def _tarball(tenant: Tenant, database: Path, sha256: str, work: Path, destination: Path) -> None:
    manifest: dict[str, object] = {"tenant": tenant.id, "slug": tenant.slug}
    files = {"tenant.sqlite3": sha256}
    with tarfile.open(destination, "w") as tar:
        tar.add(database, arcname="tenant.sqlite3")
        for run in Run.objects.filter(tenant=tenant).select_related("database").order_by("id"):
            local = work / f"{run.id}.sqlite3"
            if run.archived_at is not None:
                with (
                    storages["archives"].open(run.archive_key, "rb") as source,
                    local.open("wb") as target,
                ):
                    while chunk := source.read(CHUNK):
                        target.write(chunk)
                digest = file_sha256(local)
            elif absolute(run.database.path).exists():
                digest = snapshot(absolute(run.database.path), local).sha256
            else:
                continue
            tar.add(local, arcname=f"runs/{run.id}.sqlite3")
            files[f"runs/{run.id}.sqlite3"] = digest
            local.unlink()
        manifest["sha256"] = files
        text = work / "manifest.json"
        text.write_text(json.dumps(manifest, indent=2))
        tar.add(text, arcname="manifest.json")
