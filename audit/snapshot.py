"""Consistent copies of SQLite files, hashed while they are written (decision 0035).

A copy is taken under SQLite's write lock (`BEGIN IMMEDIATE`) once the WAL is folded into the
main file and empty: nobody can change the file while its bytes are read, so a byte copy is a
consistent database, at the speed of a file copy (the design's measures: 1.16 GB/s against
336 MB/s for `VACUUM INTO` and 440 MB/s for the backup API). The copy's header says
"rollback journal" instead of "WAL" (bytes 18-19), so it opens anywhere, read-only media
included, without a -wal or -shm beside it.
"""

import hashlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

CHUNK = 4 * 1024 * 1024
WAL_HEADER_OFFSET = 18


@dataclass(frozen=True)
class Snapshot:
    path: Path
    size: int
    sha256: str


class SnapshotBusy(Exception):
    """The WAL kept filling up (a writer is active): the copy could not be taken."""


def snapshot(source: Path, destination: Path, *, attempts: int = 20) -> Snapshot:
    """Copy the SQLite database at `source` consistently to `destination` (must not exist)."""
    conn = sqlite3.connect(
        f"{source.as_uri()}?mode=rw",
        uri=True,
        isolation_level=None,
        timeout=settings.SQLITE_BUSY_TIMEOUT_S,
    )
    try:
        wal = source.with_name(source.name + "-wal")
        for _ in range(attempts):
            conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            conn.execute("BEGIN IMMEDIATE")
            try:
                if not wal.exists() or wal.stat().st_size == 0:
                    return _copy(source, destination)
            finally:
                conn.execute("ROLLBACK")
        raise SnapshotBusy(f"{source} kept being written; try again when it is idle.")
    finally:
        conn.close()


def _copy(source: Path, destination: Path) -> Snapshot:
    digest = hashlib.sha256()
    size = 0
    destination.parent.mkdir(parents=True, exist_ok=True)
    try:
        with source.open("rb") as reader, destination.open("xb") as writer:
            first = True
            while chunk := reader.read(CHUNK):
                if first and len(chunk) >= 100 and chunk[WAL_HEADER_OFFSET] == 2:
                    chunk = chunk[:WAL_HEADER_OFFSET] + b"\x01\x01" + chunk[20:]
                first = False
                digest.update(chunk)
                writer.write(chunk)
                size += len(chunk)
            writer.flush()
            os.fsync(writer.fileno())
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return Snapshot(path=destination, size=size, sha256=digest.hexdigest())


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
