"""Consistent copies of SQLite files, hashed while they are written (decision 0035).

A copy is taken under SQLite's write lock (`BEGIN IMMEDIATE`) once the WAL is folded into the
main file and empty: nobody can change the file while its bytes are read, so a byte copy (by
`cp` in a child process, see `_copy`) is a consistent database, at the speed of a file copy
(the design's measures: 1.16 GB/s against 336 MB/s for `VACUUM INTO` and 440 MB/s for the
backup API). The copy's header says
"rollback journal" instead of "WAL" (bytes 18-19), so it opens anywhere, read-only media
included, without a -wal or -shm beside it.
"""

import hashlib
import os
import sqlite3
import subprocess
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
    """Copy `source` to `destination` with `cp` in a child process, then hash the copy here.

    Never read the live file in this process: closing any descriptor of it would drop every
    POSIX lock this process holds on it (the write lock this copy runs under, and the read locks
    of its other connections), after which another process could write it, or checkpoint and
    delete its -wal under our connections (sqlite.org/howtocorrupt.html, 2.2). A child's
    descriptors carry no locks of ours. The copy is then our own file: hashed, its header set to
    "rollback journal", and fsynced here.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    if destination.exists():
        raise FileExistsError(destination)
    try:
        subprocess.run(["cp", "--", str(source), str(destination)], check=True, capture_output=True)
        digest = hashlib.sha256()
        size = 0
        with destination.open("r+b") as copy:
            header = copy.read(100)
            if len(header) >= 100 and header[WAL_HEADER_OFFSET] == 2:
                copy.seek(WAL_HEADER_OFFSET)
                copy.write(b"\x01\x01")
                copy.flush()
            copy.seek(0)
            while chunk := copy.read(CHUNK):
                digest.update(chunk)
                size += len(chunk)
            os.fsync(copy.fileno())
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
