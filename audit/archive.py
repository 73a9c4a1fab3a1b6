"""Archive finished runs to STORAGES["archives"], idempotently and crash-safely (decision 0036).

`run_archive` steps, each safe to repeat:
1. snapshot the closed run's file (`audit.snapshot`: consistent, hashed while copied); on a
   filesystem storage straight into the run's folder there, under a temporary name;
2. place it under a key named by its SHA-256 (`<tenant>/<run>/<sha256>.sqlite3`): on a
   filesystem storage a rename (then the folder is fsynced), elsewhere an upload of the
   snapshot; a retry finds the same object and does not place it again;
3. record key, size, checksum, schema version, audit head and `archived_at` on the run's
   control-plane row;
4. remove other objects under the run's prefix (a retry whose snapshot differed) and only then
   release the run's connections and remove its local file.

The local file goes only after the control plane names a complete object, so a crash at any
step leaves the live database, a verified archive, or both; `archive_runs` finishes the work.
"""

import logging
import os
import sqlite3
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from django.core.files import File
from django.core.files.storage import storages
from django.utils import timezone

from audit import chain
from audit.exceptions import ArchiveFailed, RunNotFinished
from audit.snapshot import Snapshot, snapshot
from runs.models import Run
from runs.selectors import run_forget
from tenancy import connections
from tenancy.context import tenant_context
from tenancy.ids import new_id
from tenancy.paths import absolute, run_alias, scratch_dir
from tenancy.templates import fsync_path, remove_database_files

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Archived:
    run_id: str
    key: str
    size: int
    sha256: str
    action: str  # "archived", "finished" (a previous attempt had uploaded and recorded it)


def archive_key(run: Run, sha256: str) -> str:
    return f"{run.tenant_id}/{run.id}/{sha256}.sqlite3"


def run_archive(*, run_id: str) -> Archived:
    """Archive a finished run (see the module); idempotent, retryable."""
    run = Run.objects.select_related("tenant", "database").get(pk=run_id)
    if run.is_active:
        raise RunNotFinished(f"Run {run.id} is active; complete it before archiving it.")
    if run.archived_at is not None:
        _release_local(run)
        return Archived(run.id, run.archive_key, run.archive_bytes or 0, run.archive_sha256, "done")
    path = absolute(run.database.path)
    if not path.exists():
        raise ArchiveFailed(
            f"Run {run.id} has no local database file and no archive (it failed without its "
            "database); there is nothing to archive."
        )
    shot = snapshot(path, _staging_path(run))
    try:
        head = _audit_head(shot.path)
        key = archive_key(run, shot.sha256)
        _place(key, shot)
    finally:
        shot.path.unlink(missing_ok=True)
    _record(run, key=key, shot=shot, head=head, now=timezone.now())
    _remove_other_objects(run, keep=key)
    _release_local(run)
    try:
        with tenant_context(run.tenant):
            chain.tenant_append("run_archived", {"run": run.id, "key": key, "sha256": shot.sha256})
    except Exception:  # the archive stands; the tenant trail misses one line (logged)
        logger.exception("run %s archived; its tenant audit entry could not be written", run.id)
    logger.info("run %s archived: %s (%d bytes)", run.id, key, shot.size)
    return Archived(run.id, key, shot.size, shot.sha256, "archived")


def _audit_head(path: Path) -> str:
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        row = conn.execute(
            f"SELECT hash FROM {chain.RUN_TABLE} ORDER BY seq DESC LIMIT 1"
        ).fetchone()
    finally:
        conn.close()
    return row[0] if row else chain.GENESIS


def _staging_path(run: Run) -> Path:
    """Where the snapshot is written: beside its final place on a filesystem storage (so it
    only has to be renamed, never copied again), else in DATA_DIR/tmp (then uploaded).

    The name starts with a dot and does not end in `.sqlite3`: a leftover of a crash is not an
    archive, and step 4 of a later attempt removes it with the run's other objects."""
    local = _local_path(archive_key(run, "staging"))
    name = f".{run.id}.{new_id('snap')}.partial"
    return local.with_name(name) if local is not None else scratch_dir() / name


def _local_path(key: str) -> Path | None:
    """The file behind `key` when the archive storage is a local filesystem, else None."""
    try:
        return Path(storages["archives"].path(key))
    except NotImplementedError:  # S3 and other remote storages
        return None


def _place(key: str, shot: Snapshot) -> None:
    """Put the snapshot in the storage under `key` (see `_rename` and `_upload`)."""
    local = _local_path(key)
    if local is not None and local.parent == shot.path.parent:
        _rename(local, shot)
    else:
        _upload(key, shot)


def _rename(final: Path, shot: Snapshot) -> None:
    """Rename the (fsynced) snapshot to its final name, then fsync the folder: the archive is
    durable before the control plane names it and before the live file goes."""
    # Already there with its size: placed by an attempt that died before recording it (same
    # name, same bytes); its rename is synced below all the same.
    if not final.exists() or final.stat().st_size != shot.size:
        mode = getattr(storages["archives"], "file_permissions_mode", None)  # FileSystemStorage
        if mode is not None:
            os.chmod(shot.path, mode)
        os.replace(shot.path, final)
    fsync_path(final.parent)


def _upload(key: str, shot: Snapshot) -> None:
    """Stream the snapshot (in DATA_DIR/tmp) to a storage that is not a local folder (S3)."""
    storage = storages["archives"]
    if storage.exists(key) and storage.size(key) == shot.size:
        return  # uploaded by an attempt that died before recording it
    with shot.path.open("rb") as handle:
        saved = storage.save(key, File(handle, name=str(shot.path)))
    if saved != key or storage.size(key) != shot.size:
        raise ArchiveFailed(f"Archive {key} was stored as {saved!r} or with another size.")


def _record(run: Run, *, key: str, shot: Snapshot, head: str, now: datetime) -> None:
    Run.objects.filter(pk=run.pk, archived_at__isnull=True).update(
        archive_key=key,
        archive_bytes=shot.size,
        archive_sha256=shot.sha256,
        archive_schema_version=run.database.schema_version,
        audit_head=head,
        archived_at=now,
    )
    run_forget(run=run)


def _remove_other_objects(run: Run, *, keep: str) -> None:
    storage = storages["archives"]
    prefix = f"{run.tenant_id}/{run.id}"
    try:
        _, names = storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in names:
        if f"{prefix}/{name}" != keep:
            storage.delete(f"{prefix}/{name}")


def _release_local(run: Run) -> None:
    connections.release(run_alias(run.id))
    path = absolute(run.database.path)
    remove_database_files(path)


def runs_to_archive(
    *, older_than: datetime | None = None, tenant_slug: str | None = None
) -> Iterable[Run]:
    """Return finished runs not archived yet (oldest first); those without a file are skipped."""
    rows = Run.objects.exclude(status=Run.Status.ACTIVE).filter(archived_at__isnull=True)
    if older_than is not None:
        rows = rows.filter(finished_at__lte=older_than)
    if tenant_slug is not None:
        rows = rows.filter(tenant__slug=tenant_slug)
    return rows.select_related("database").order_by("finished_at", "id")


def runs_archive(
    *,
    older_than: datetime | None = None,
    tenant_slug: str | None = None,
    progress: Callable[[list[Run]], Iterable[Run]] = iter,
) -> tuple[list[Archived], dict[str, str]]:
    """Archive every finished run not archived yet; return those done and {run id: error}."""
    done, failed = [], {}
    candidates = [
        run
        for run in runs_to_archive(older_than=older_than, tenant_slug=tenant_slug)
        if absolute(run.database.path).exists()
    ]
    for run in progress(candidates):
        try:
            done.append(run_archive(run_id=run.id))
        except Exception as exc:
            logger.exception("run %s could not be archived", run.id)
            failed[run.id] = f"{type(exc).__name__}: {exc}"
    return done, failed


def on_run_finished(sender: Any, run_id: str, **kwargs: Any) -> None:
    """Schedule the archive of a run that just finished (inline in embedded mode)."""
    from django.conf import settings

    from audit.tasks import archive_run

    if not settings.ARCHIVE_ON_COMPLETE:
        return
    try:
        archive_run.delay(run_id)
    except Exception:  # `archive_runs` picks it up later; completing the run stands
        logger.exception("run %s finished; its archive could not be scheduled", run_id)
