"""The run's single writer, against real Redis, real processes and real SQLite files.

Each test provisions its own DATA_DIR and control plane, writes from separate processes
(`tests.runs.writer_proc`, which logs every acknowledged write), injects the fault the writer
guards against (SIGSTOP past the lease TTL, SIGKILL mid-batch), then checks the run database:
every acknowledged write present, sequence numbers gapless, `PRAGMA integrity_check` ok.
"""

import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis

from tests.processes import PYTHON, ROOT, manage, project_env

pytestmark = pytest.mark.processes


@dataclass
class RunSetup:
    env: dict[str, str]
    run_id: str
    db_path: Path
    tmp: Path

    def writer(self, *args: str) -> subprocess.Popen:
        return subprocess.Popen(
            [PYTHON, "-m", "tests.runs.writer_proc", args[0], self.run_id, *args[1:]],
            env=self.env,
            cwd=ROOT,
        )

    def rows(self) -> list[tuple[int, str]]:
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute("SELECT seq, name FROM runs_toolcall ORDER BY seq").fetchall()

    def integrity(self) -> str:
        with sqlite3.connect(self.db_path) as conn:
            return conn.execute("PRAGMA integrity_check").fetchone()[0]


def provision(tmp_path: Path, **extra: str) -> RunSetup:
    data_dir = tmp_path / "data"
    env = project_env(data_dir, **extra)
    manage(env, "migrate", "--no-input", "-v", "0")
    manage(env, "create_tenant", "acme")
    run_id = (
        manage(
            env,
            "shell",
            "-c",
            "from tenants.models import Tenant; from runs.services import run_create; "
            "print(run_create(tenant=Tenant.objects.get(slug='acme')).id)",
        )
        .stdout.strip()
        .splitlines()[-1]
    )
    with sqlite3.connect(data_dir / "control.sqlite3") as conn:
        (relpath,) = conn.execute(
            "SELECT d.path FROM runs_run r JOIN tenants_database d ON d.id = r.database_id "
            "WHERE r.id = ?",
            [run_id],
        ).fetchone()
    return RunSetup(env, run_id, data_dir / relpath, tmp_path)


@pytest.fixture(params=["redis", "embedded"])
def setup(request, tmp_path, redis_url) -> Iterator[RunSetup]:
    extra = {"RUN_LEASE_TTL_S": "1", "SQLITE_BUSY_TIMEOUT_S": "1"}
    if request.param == "redis":
        extra["REDIS_URL"] = redis_url
    yield provision(tmp_path, **extra)


def read_log(path: Path) -> list[str]:
    return path.read_text().split() if path.exists() else []


def acked(path: Path) -> list[int]:
    lines = path.read_text().splitlines() if path.exists() else []
    return [int(line) for line in lines if line.isdigit()]


def wait_until(predicate, what: str, deadline_s: float = 30.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def finish(proc: subprocess.Popen, timeout: float = 300) -> None:
    assert proc.wait(timeout=timeout) == 0, f"writer process exited with {proc.returncode}"


def test_64_writers_in_4_processes_get_10000_unique_gapless_seqs(setup):
    logs = [setup.tmp / f"acks-{i}.log" for i in range(4)]
    procs = [setup.writer("write", "2500", "16", str(log)) for log in logs]
    for proc in procs:
        finish(proc)
    seqs = sorted(seq for log in logs for seq in acked(log))
    assert seqs == list(range(1, 10_001))  # every write acknowledged once, no seq twice
    assert [seq for seq, _ in setup.rows()] == list(range(1, 10_001))
    assert setup.integrity() == "ok"


def test_kill_9_mid_batch_loses_no_acknowledged_write_and_the_lease_is_taken_over(setup):
    victim_log = setup.tmp / "victim.log"
    victim = setup.writer("write", "100000", "16", str(victim_log))
    wait_until(lambda: len(acked(victim_log)) >= 300, "300 acknowledged writes")
    victim.send_signal(signal.SIGKILL)
    victim.wait()
    acknowledged = acked(victim_log)

    # The next writer gets the lease once the dead holder's TTL ran out (Redis) or at once
    # (the OS released the flock); its wait bound is longer than the TTL.
    after_log = setup.tmp / "after.log"
    finish(setup.writer("write", "50", "4", str(after_log)))
    assert len(acked(after_log)) == 50, read_log(after_log)

    seqs = [seq for seq, _ in setup.rows()]
    assert set(acknowledged) <= set(seqs)
    assert seqs == list(range(1, len(seqs) + 1))
    assert setup.integrity() == "ok"


@pytest.mark.parametrize("where", ["lease", "transaction"])
def test_a_holder_stopped_past_its_ttl_cannot_commit(tmp_path, redis_url, where):
    setup = provision(tmp_path, REDIS_URL=redis_url, RUN_LEASE_TTL_S="1", SQLITE_BUSY_TIMEOUT_S="1")
    ready, go, stalled_log = tmp_path / "ready", tmp_path / "go", tmp_path / "stalled.log"
    stalled = setup.writer("stall", where, str(ready), str(go), str(stalled_log))
    wait_until(ready.exists, "the stalled writer to hold the lease")
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        client = redis.Redis.from_url(redis_url)
        wait_until(
            lambda: not client.exists(f"agentdb:lease:{setup.run_id}"), "the lease to expire"
        )
        other_log = tmp_path / "other.log"
        finish(setup.writer("write", "1", "1", str(other_log)))
        if where == "lease":
            # The stalled holder took no database lock: the next holder writes with a higher
            # fencing token.
            assert acked(other_log) == [1]
        else:
            # The stalled holder sits inside BEGIN IMMEDIATE: SQLite keeps everyone else out,
            # and the other writer is told to retry (nothing written).
            assert read_log(other_log) == ["error", "run_busy"]
    finally:
        go.touch()
        os.kill(stalled.pid, signal.SIGCONT)
    finish(stalled)
    assert read_log(stalled_log) == ["error", "lease_lost"]
    assert "stalled" not in {name for _, name in setup.rows()}
    after_log = tmp_path / "after.log"
    finish(setup.writer("write", "1", "1", str(after_log)))
    assert len(acked(after_log)) == 1
    seqs = [seq for seq, _ in setup.rows()]
    assert seqs == list(range(1, len(seqs) + 1))
    assert setup.integrity() == "ok"


def test_embedded_holder_stopped_makes_others_wait_a_bounded_time(tmp_path):
    setup = provision(tmp_path, RUN_WRITE_WAIT_S="0.5", SQLITE_BUSY_TIMEOUT_S="1")
    ready, go, stalled_log = tmp_path / "ready", tmp_path / "go", tmp_path / "stalled.log"
    stalled = setup.writer("stall", "lease", str(ready), str(go), str(stalled_log))
    wait_until(ready.exists, "the stalled writer to hold the lock")
    os.kill(stalled.pid, signal.SIGSTOP)
    try:
        other_log = tmp_path / "other.log"
        finish(setup.writer("write", "1", "1", str(other_log)))
        assert read_log(other_log) == ["error", "run_busy"]
    finally:
        go.touch()
        os.kill(stalled.pid, signal.SIGCONT)
    finish(stalled)
    # No TTL in embedded mode: the OS lock cannot be lost while held, so the holder commits.
    assert read_log(stalled_log) == ["ok", "1"]
    assert setup.rows() == [(1, "stalled")]
    assert setup.integrity() == "ok"
