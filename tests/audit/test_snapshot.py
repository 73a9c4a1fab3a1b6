"""Snapshots: a byte copy of a live database under its write lock, hashed while it is written."""

import hashlib
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from audit import snapshot as snapshots

# Writes its argv[2] bytes to argv[1] in pieces, pausing between them, as a slow `cp` would.
SLOW_WRITER = """
import sys, time
data = open(sys.argv[2], "rb").read()
with open(sys.argv[1], "r+b", buffering=0) as out:
    for start in range(0, len(data), 300_000):
        out.write(data[start : start + 300_000])
        time.sleep(0.02)
"""


def _live_database(path: Path, rows: int = 2000) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, body TEXT)")
    conn.executemany("INSERT INTO t (body) VALUES (?)", [(f"row {i} " * 20,) for i in range(rows)])
    return conn


def test_the_hash_follows_a_writer_it_catches_up_with(tmp_path):
    """The copy is hashed while another process writes it: when the hash catches up it waits
    for more bytes, and it ends with exactly the bytes written (header as "rollback journal")."""
    data = bytearray(hashlib.sha256(str(n).encode()).digest()[0] for n in range(2_000_000))
    data[snapshots.WAL_HEADER_OFFSET : snapshots.WAL_HEADER_OFFSET + 2] = b"\x02\x02"
    source = tmp_path / "source.bin"
    source.write_bytes(data)
    target = tmp_path / "target.bin"
    target.touch()
    child = subprocess.Popen([sys.executable, "-c", SLOW_WRITER, str(target), str(source)])
    fd = os.open(target, os.O_RDONLY)
    try:
        size, digest, patch = snapshots._follow(fd, lambda: child.poll() is not None)
    finally:
        os.close(fd)
    assert child.wait() == 0
    expected = bytearray(data)
    expected[snapshots.WAL_HEADER_OFFSET : snapshots.WAL_HEADER_OFFSET + 2] = b"\x01\x01"
    assert (size, patch) == (len(data), b"\x01\x01")
    assert digest == hashlib.sha256(expected).hexdigest()


def test_a_snapshot_is_the_live_file_byte_for_byte_but_its_journal_mode(tmp_path, settings):
    live = tmp_path / "live.sqlite3"
    conn = _live_database(live)
    try:
        shot = snapshots.snapshot(live, tmp_path / "copy" / "snap.sqlite3")
        assert conn.execute("SELECT count(*) FROM t").fetchone() == (2000,)
    finally:
        conn.close()  # nothing written since the snapshot: the file stays as it was copied
    copied = shot.path.read_bytes()
    assert len(copied) == shot.size
    assert hashlib.sha256(copied).hexdigest() == shot.sha256
    assert copied[18:20] == b"\x01\x01"
    reader = sqlite3.connect(f"file:{shot.path}?mode=ro", uri=True)
    try:
        assert reader.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert reader.execute("SELECT count(*) FROM t").fetchone() == (2000,)
    finally:
        reader.close()
    # Apart from the header's two bytes (WAL in the live file), the copy is the live file.
    original = live.read_bytes()
    assert original[18:20] == b"\x02\x02"
    assert copied[:18] == original[:18] and copied[20:] == original[20:]


def test_a_snapshot_never_overwrites(tmp_path, settings):
    live = tmp_path / "live.sqlite3"
    _live_database(live, rows=10).close()
    taken = tmp_path / "taken.sqlite3"
    taken.write_bytes(b"someone else's")
    with pytest.raises(FileExistsError):
        snapshots.snapshot(live, taken)
    assert taken.read_bytes() == b"someone else's"


def test_a_failed_copy_leaves_no_file(tmp_path):
    target = tmp_path / "copy.sqlite3"
    with pytest.raises(subprocess.CalledProcessError):
        snapshots._copy(tmp_path / "missing.sqlite3", target)
    assert not target.exists()
