"""Consistent copies of SQLite files, hashed while they are written (decisions 0035, 0041).

A copy is taken under SQLite's write lock (`BEGIN IMMEDIATE`) once the WAL is folded into the
main file and empty: nobody can change the file while its bytes are read, so a byte copy (by
`cp` in a child process, see `_copy`) is a consistent database, at the speed of a file copy
(the design's measures: 1.16 GB/s against 336 MB/s for `VACUUM INTO` and 440 MB/s for the
backup API). The copy's header says
"rollback journal" instead of "WAL" (bytes 18-19), so it opens anywhere, read-only media
included, without a -wal or -shm beside it.

The copy is one pass (decision 0041): while the child copies, this process hashes the bytes
as they land in the copy and starts their write-back to disk, so copying, hashing and most of
the fsync overlap instead of following one another.
"""

import ctypes
import hashlib
import os
import sqlite3
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings

CHUNK = 4 * 1024 * 1024
WAL_HEADER_OFFSET = 18
# Writes back what was hashed in steps of this many bytes, so the final fsync finds little left.
WRITEBACK_STEP = 8 * 1024 * 1024
# How long to wait for the child to write more when the hash has caught up with it.
FOLLOW_PAUSE_S = 0.0005


@dataclass(frozen=True)
class Snapshot:
    path: Path
    size: int
    sha256: str


class SnapshotBusy(Exception):
    """The WAL kept filling up (a writer is active): the copy could not be taken."""


def snapshot(source: Path, destination: Path, *, attempts: int = 20) -> Snapshot:
    """Copy the SQLite database at `source` consistently to `destination` (must not exist).

    The copy is fsynced (not its directory: the caller renames it into place and syncs that).
    """
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
    """Copy `source` to `destination` with `cp` in a child process, hashing the copy meanwhile.

    Never read the live file in this process: closing any descriptor of it would drop every
    POSIX lock this process holds on it (the write lock this copy runs under, and the read locks
    of its other connections), after which another process could write it, or checkpoint and
    delete its -wal under our connections (sqlite.org/howtocorrupt.html, 2.2). A child's
    descriptors carry no locks of ours. The copy is our own file: created here (exclusively),
    `cp` writes into it, and `_follow` reads and hashes it as it grows; its header is set to
    "rollback journal" (the hash covers the header as stored) and it is fsynced here.
    """
    destination.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(destination, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        try:
            child = subprocess.Popen(
                ["cp", "--", str(source), str(destination)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
            )
            try:
                size, digest, patch = _follow(fd, lambda: child.poll() is not None)
            finally:
                _, errors = child.communicate()
            if child.returncode != 0:
                raise subprocess.CalledProcessError(child.returncode, child.args, stderr=errors)
            if patch:
                os.pwrite(fd, patch, WAL_HEADER_OFFSET)
            os.fsync(fd)
        finally:
            os.close(fd)
    except BaseException:
        destination.unlink(missing_ok=True)
        raise
    return Snapshot(path=destination, size=size, sha256=digest)


def _follow(fd: int, finished: Callable[[], bool]) -> tuple[int, str, bytes]:
    """Hash the file `fd` while another process writes it front to back, until it `finished`.

    Returns its size, the SHA-256 of its bytes with a WAL header read as "rollback journal",
    and the bytes to write at `WAL_HEADER_OFFSET` for that (empty when nothing is to change).
    The kernel raises a file's size only after the bytes below it are in place, so whatever a
    read returns is what the writer wrote. Hashed ranges are handed to write-back as we go.
    """
    digest = hashlib.sha256()
    buffer = bytearray(CHUNK)
    view = memoryview(buffer)
    offset = synced = 0
    patch = b""
    while True:
        done = finished()  # before the read: a short read after `done` is the end of the file
        if offset == 0 and not done and os.fstat(fd).st_size < 100:
            time.sleep(FOLLOW_PAUSE_S)  # the header is hashed (and checked) in one piece
            continue
        count = os.preadv(fd, [view], offset)
        if count == 0:
            if done:
                return offset, digest.hexdigest(), patch
            time.sleep(FOLLOW_PAUSE_S)
            continue
        if offset == 0 and count >= 100 and buffer[WAL_HEADER_OFFSET] == 2:
            patch = b"\x01\x01"
            buffer[WAL_HEADER_OFFSET : WAL_HEADER_OFFSET + 2] = patch
        digest.update(view[:count])
        offset += count
        if offset - synced >= WRITEBACK_STEP:
            _start_writeback(fd, synced, offset - synced)
            synced = offset


def _writeback_function() -> Callable[[int, int, int, int], int] | None:
    """Return libc's `sync_file_range` (Linux), or None where there is none."""
    try:
        function = ctypes.CDLL(None, use_errno=True).sync_file_range
    except (AttributeError, OSError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function  # type: ignore[no-any-return]


_sync_file_range = _writeback_function()
SYNC_FILE_RANGE_WRITE = 2


def _start_writeback(fd: int, offset: int, length: int) -> None:
    """Start writing `length` bytes at `offset` to disk without waiting (a hint: the fsync at
    the end is what makes the copy durable; without `sync_file_range` it does all the work)."""
    if _sync_file_range is not None:
        _sync_file_range(fd, offset, length, SYNC_FILE_RANGE_WRITE)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as reader:
        while chunk := reader.read(CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
