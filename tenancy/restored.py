"""Read-only local copies of archived databases, fetched from STORAGES["archives"] on demand.

An archived run's live file is gone; its reads go to a copy under `DATA_DIR/restored`, named
by the archive's SHA-256 and checked against it when fetched. Copies are immutable (opened with
`immutable=1`: no journal, no locks), so any number of threads and processes share one. The
directory is bounded by `ARCHIVE_CACHE_MAX_BYTES`: after each fetch the least recently opened
copies are removed (a connection still open on a removed copy keeps reading it).

Latency: the first read of an archived run costs one download and one hash of the file (a few
ms for a small run on local storage; size / bandwidth from S3); later reads cost what a live
run's do. From a filesystem storage the download is a kernel copy (`shutil.copyfile`) in a
thread while this one hashes the same archive, so the two overlap (decision 0041).
"""

import hashlib
import os
import shutil
import threading
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.files.storage import storages

from tenancy.connections import connection_for, touch
from tenancy.exceptions import DatabaseUnavailable
from tenancy.ids import new_id
from tenancy.paths import archived_run_alias, restored_dir
from tenancy.templates import fsync_path

CHUNK = 4 * 1024 * 1024


def bound_alias(run: Any) -> str:
    """Return (and open, in this thread) the alias of the archived run's read-only copy."""
    alias = archived_run_alias(run.id)
    if not touch(alias):
        path = restored_copy(key=run.archive_key, sha256=run.archive_sha256)
        connection_for(alias, path, read_only=True)
    return alias


def restored_copy(*, key: str, sha256: str) -> Path:
    """Return the local copy of archive `key`, fetching and checking it if it is not cached."""
    path = restored_dir() / f"{sha256}.sqlite3"
    try:
        os.utime(path)  # least recently opened goes first
        return path
    except FileNotFoundError:
        pass
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{new_id('dl')}")
    try:
        if _fetch(key, partial) != sha256:
            raise DatabaseUnavailable(
                f"Archive {key} does not match its recorded SHA-256; run `manage.py verify_run`.",
                code="archive_damaged",
            )
        # Durable before it takes its checksum's name: after a power loss that name must not
        # hold a torn copy, which would be served as the archive.
        fsync_path(partial)
        os.replace(partial, path)
    except DatabaseUnavailable:
        raise
    except Exception as exc:  # the storage's own errors (OSError, botocore's ClientError, ...)
        raise DatabaseUnavailable(
            f"Archive {key} could not be fetched ({exc}); retry later.", code="archive_unavailable"
        ) from exc
    finally:
        partial.unlink(missing_ok=True)
    evict(keep=path)
    return path


def _fetch(key: str, partial: Path) -> str:
    """Copy archive `key` to `partial` (a new name); return the SHA-256 of the archive."""
    storage = storages["archives"]
    try:
        local = Path(storage.path(key))
    except NotImplementedError:  # S3 and other remote storages: one stream, hashed as read
        digest = hashlib.sha256()
        with storage.open(key, "rb") as source, partial.open("xb") as target:
            while chunk := source.read(CHUNK):
                digest.update(chunk)
                target.write(chunk)
        return digest.hexdigest()
    return _copy_hashing(local, partial)


def _copy_hashing(source: Path, target: Path) -> str:
    """Copy a local archive with the kernel (another thread) while hashing it here.

    The archive is an immutable file of ours (not a live database), so reading it in this
    process is safe; both passes read it from the page cache, and hashlib releases the GIL.
    """
    failed: list[BaseException] = []

    def copy() -> None:
        try:
            shutil.copyfile(source, target)  # sendfile(2) on Linux: no copy through Python
        except BaseException as exc:
            failed.append(exc)

    copier = threading.Thread(target=copy, name="restore-copy")
    copier.start()
    try:
        digest = hashlib.sha256()
        with source.open("rb") as reader:
            while chunk := reader.read(CHUNK):
                digest.update(chunk)
    finally:
        copier.join()
    if failed:
        raise failed[0]
    return digest.hexdigest()


def evict(*, keep: Path | None = None) -> int:
    """Remove the least recently opened copies beyond `ARCHIVE_CACHE_MAX_BYTES`; return how many."""
    copies = []
    for entry in os.scandir(restored_dir()):
        if entry.name.endswith(".sqlite3") and not entry.name.startswith("."):
            st = entry.stat()
            copies.append((st.st_mtime_ns, st.st_size, Path(entry.path)))
    total = sum(size for _, size, _ in copies)
    removed = 0
    for _, size, path in sorted(copies):
        if total <= settings.ARCHIVE_CACHE_MAX_BYTES:
            break
        if path == keep:
            continue
        path.unlink(missing_ok=True)
        total -= size
        removed += 1
    return removed
