"""Rollouts under concurrency: one at a time, busy databases retried, live writers unharmed.

Real processes throughout: `migrate_tenants` runs as operators run it, writers are separate
processes writing the databases with SQLite's busy timeout, as the web's connections do.
"""

import sqlite3
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest
import redis
from filelock import FileLock

from tests.processes import ROOT, manage
from tests.tenancy.fleetkit import (
    columns,
    deploy,
    duplicate_ledger_rows,
    fleet_under_v1,
    ledger,
    query,
    start_manage,
    triggers,
    wait_until,
)

pytestmark = pytest.mark.processes

# A writer: for each database, insert a row and append to its own counter row, one transaction
# each, waiting within SQLite's busy timeout; every write is acknowledged (a line in its file)
# only after COMMIT returned. Busy answers are retried, as a client retries a 503.
WRITER = r"""
import sqlite3, sys
from pathlib import Path

acks, stop, name, *paths = sys.argv[1:]
out = open(acks, "a", buffering=1)
conns = [sqlite3.connect(p, timeout=10, isolation_level=None) for p in paths]

def write(conn, sql, params):
    while True:
        try:
            conn.execute("BEGIN IMMEDIATE")
            row = conn.execute(sql, params).fetchone()
            conn.execute("COMMIT")
            return row
        except sqlite3.OperationalError as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if exc.sqlite_errorcode & 0xFF not in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED):
                raise

counters = []
for i, conn in enumerate(conns):
    (cid,) = write(conn, "INSERT INTO fleetapp_note (text, pinned) VALUES (?, 0) RETURNING id",
                   (f"counter-{name}-",))
    counters.append(cid)
    out.write(f"C {i} {cid}\n")
n = 0
while not Path(stop).exists():
    for i, conn in enumerate(conns):
        write(conn, "INSERT INTO fleetapp_note (text, pinned) VALUES (?, 0)", (f"{name}-{n}",))
        out.write(f"I {i} {name}-{n}\n")
        write(conn, "UPDATE fleetapp_note SET text = text || 'x' WHERE id = ?", (counters[i],))
        out.write(f"U {i}\n")
    n += 1
"""


def ack_lines(path: Path) -> list[str]:
    return [line for line in path.read_text().splitlines() if line] if path.exists() else []


def test_two_rollouts_at_once_with_writers_through_a_rebuild_lose_nothing(tmp_path):
    data_dir = tmp_path / "data"
    v1 = fleet_under_v1(data_dir, tenants=8, notes=200)
    v2 = deploy(v1, "v2")
    manage(v2, "migrate_tenants")
    files = [data_dir / path for path, *_ in ledger(data_dir)]
    v5 = deploy(v2, "v5")  # a table rebuild of fleetapp_note, plus SQL effects

    stop = tmp_path / "stop"
    writers = []
    for name in ("w0", "w1"):
        acks = tmp_path / f"{name}.acks"
        proc = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(acks), str(stop), name, *map(str, files)],
            cwd=ROOT,
        )
        writers.append((name, acks, proc))
    try:
        wait_until(
            lambda: all(len(ack_lines(acks)) >= 40 for _, acks, _ in writers), "writers to start"
        )
        first = start_manage(v5, "migrate_tenants", "--parallel", "2", log=tmp_path / "a.log")
        second = start_manage(v5, "migrate_tenants", "--parallel", "2", log=tmp_path / "b.log")
        assert first.wait(timeout=240) == 0, (tmp_path / "a.log").read_text()
        assert second.wait(timeout=240) == 0, (tmp_path / "b.log").read_text()
        during = {name: len(ack_lines(acks)) for name, acks, _ in writers}
        wait_until(
            lambda: all(len(ack_lines(acks)) >= during[name] + 40 for name, acks, _ in writers),
            "writers to go on after the rollout",
        )
    finally:
        stop.touch()
        for _, _, proc in writers:
            proc.wait(timeout=60)
    assert all(proc.returncode == 0 for _, _, proc in writers)

    logs = (tmp_path / "a.log").read_text() + (tmp_path / "b.log").read_text()
    assert logs.count("8 migrated") == 1  # one rollout did the work ...
    assert "All 8 databases are at schema" in logs  # ... the other found nothing left
    assert {state for _, _, state, _ in ledger(data_dir)} == {"ready"}
    assert len({version for _, version, _, _ in ledger(data_dir)}) == 1
    for path in files:
        assert (
            "varchar(500)"
            in query(path, "SELECT sql FROM sqlite_master WHERE name = 'fleetapp_note'")[0][0]
        )
        assert "fleetapp_note_not_empty" in triggers(path)
        assert duplicate_ledger_rows(path) == []
        assert query(path, "PRAGMA integrity_check") == [("ok",)]
    for name, acks, _ in writers:
        lines = ack_lines(acks)
        counters = {int(i): int(cid) for _, i, cid in (ln.split() for ln in lines if ln[0] == "C")}
        updates = Counter(int(ln.split()[1]) for ln in lines if ln[0] == "U")
        inserted: dict[int, set[str]] = {}
        for ln in lines:
            if ln[0] == "I":
                _, i, text = ln.split()
                inserted.setdefault(int(i), set()).add(text)
        for i, path in enumerate(files):
            texts = {
                t
                for (t,) in query(
                    path, "SELECT text FROM fleetapp_note WHERE text LIKE ?", (f"{name}-%",)
                )
            }
            assert inserted[i] <= texts  # every acknowledged insert is there
            (counter,) = query(path, "SELECT text FROM fleetapp_note WHERE id = ?", (counters[i],))
            assert counter[0] == f"counter-{name}-" + "x" * updates[i]  # no update lost or reset


def test_busy_database_is_retried_not_quarantined(tmp_path):
    data_dir = tmp_path / "data"
    v2 = deploy(fleet_under_v1(data_dir, tenants=12, notes=200), "v2")
    files = [data_dir / path for path, *_ in ledger(data_dir)]
    held = files[5]
    v2_busy = {**v2, "SQLITE_BUSY_TIMEOUT_S": "0.2"}
    holder = sqlite3.connect(held, isolation_level=None)
    try:
        holder.execute("BEGIN IMMEDIATE")  # a long write transaction: the database is busy
        proc = start_manage(v2_busy, "migrate_tenants", "--parallel", "1", log=tmp_path / "m.log")
        others = [f for f in files if f != held]
        wait_until(lambda: all("pinned" in columns(f) for f in others), "the others to migrate")
        assert proc.poll() is None  # still retrying the busy one
        assert "pinned" not in columns(held)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert proc.wait(timeout=120) == 0, (tmp_path / "m.log").read_text()
    log = (tmp_path / "m.log").read_text()
    assert "12 migrated" in log and "0 quarantined" in log
    assert "pinned" in columns(held)
    assert {state for _, _, state, _ in ledger(data_dir)} == {"ready"}


def test_second_rollout_waits_then_exits_2_naming_the_file_lock_holder(tmp_path):
    data_dir = tmp_path / "data"
    v2 = deploy(fleet_under_v1(data_dir, tenants=3, notes=100), "v2")
    lock_file = data_dir / "locks" / "rollout.lock"
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(lock_file, thread_local=False)
    with lock:
        (data_dir / "locks" / "rollout.lock.holder").write_text("deploy 42 by the test\n")
        blocked = manage(v2, "migrate_tenants", "--lock-wait", "0.5", check=False)
    assert blocked.returncode == 2
    assert "deploy 42 by the test" in blocked.stderr
    assert {state for _, _, state, _ in ledger(data_dir)} == {"ready"}
    assert not any("pinned" in columns(data_dir / p) for p, *_ in ledger(data_dir))
    assert "3 migrated" in manage(v2, "migrate_tenants", "--lock-wait", "0.5").stdout


def test_second_rollout_waits_then_exits_2_naming_the_redis_lock_holder(tmp_path, redis_url):
    data_dir = tmp_path / "data"
    v2 = {**deploy(fleet_under_v1(data_dir, tenants=3, notes=100), "v2"), "REDIS_URL": redis_url}
    client = redis.Redis.from_url(redis_url)
    client.set("agentdb:rollout:local", "deploy 43 on another host", px=60_000)
    blocked = manage(v2, "migrate_tenants", "--lock-wait", "0.5", check=False)
    assert blocked.returncode == 2
    assert "deploy 43 on another host" in blocked.stderr
    client.delete("agentdb:rollout:local")
    assert "3 migrated" in manage(v2, "migrate_tenants", "--lock-wait", "0.5").stdout
    assert client.get("agentdb:rollout:local") is None  # released
    client.close()
