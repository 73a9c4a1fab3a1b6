"""The single writer through real HTTP: gunicorn workers killed under load, Redis stopped and
restarted under load. A client logs every 2xx it receives; afterwards each logged write is in
the run database and sequence numbers are gapless."""

import contextlib
import os
import random
import signal
import sqlite3
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import redis
import requests

from tests import processes
from tests.processes import free_port, stop_gunicorn

pytestmark = pytest.mark.processes


@dataclass
class Served:
    base: str
    key: str
    data_dir: Path
    proc: subprocess.Popen

    def post(self, session: requests.Session, path: str, body: dict) -> requests.Response:
        return session.post(
            f"{self.base}/api/v1{path}",
            json=body,
            headers={"Authorization": f"Bearer {self.key}"},
            timeout=30,
        )

    def run_db(self, run_id: str) -> Path:
        with sqlite3.connect(self.data_dir / "control.sqlite3") as conn:
            (relpath,) = conn.execute(
                "SELECT d.path FROM runs_run r JOIN tenants_database d ON d.id = r.database_id "
                "WHERE r.id = ?",
                [run_id],
            ).fetchone()
        return self.data_dir / relpath


def serve(tmp_path: Path, **extra: str) -> Served:
    live = processes.serve(tmp_path, ["acme"], **extra)
    return Served(live.root, live.keys["acme"], live.data_dir, live.proc)


@dataclass
class Load:
    """Client threads posting tool calls to one run; every 2xx seq and every status kept."""

    served: Served
    run_id: str
    threads: int = 8
    acked: list[int] = field(default_factory=list)
    statuses: list[tuple[int, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def _loop(self) -> None:
        session = requests.Session()
        while not self.stop.is_set():
            try:
                response = self.served.post(
                    session, f"/runs/{self.run_id}/tool-calls", {"name": "load", "args": {}}
                )
            except requests.RequestException:
                session = requests.Session()  # the worker died under us: nothing was acked
                continue
            body = response.json()
            ok = response.status_code == 201
            with self.lock:
                if ok:
                    self.acked.append(body["seq"])
                self.statuses.append((response.status_code, "" if ok else body["error"]["code"]))

    def __enter__(self) -> "Load":
        self._workers = [threading.Thread(target=self._loop) for _ in range(self.threads)]
        for worker in self._workers:
            worker.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for worker in self._workers:
            worker.join(timeout=60)

    def count(self, status: int) -> int:
        with self.lock:
            return sum(1 for s, _ in self.statuses if s == status)


def wait_until(predicate, what: str, deadline_s: float = 60.0) -> None:
    deadline = time.monotonic() + deadline_s
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)


def check_run_database(path: Path, acked: list[int]) -> None:
    with sqlite3.connect(path) as conn:
        seqs = [row[0] for row in conn.execute("SELECT seq FROM runs_toolcall ORDER BY seq")]
        assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert len(set(acked)) == len(acked), "a seq was acknowledged twice"
    missing = set(acked) - set(seqs)
    assert not missing, f"{len(missing)} acknowledged writes lost, e.g. {sorted(missing)[:5]}"
    assert seqs == list(range(1, len(seqs) + 1)), "seqs are not gapless"


def worker_pids(master: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(master)], capture_output=True, text=True).stdout
    return [int(pid) for pid in out.split()]


@pytest.fixture(params=["redis", "embedded"])
def served(request, tmp_path, redis_url) -> Iterator[Served]:
    extra = {"WEB_CONCURRENCY": "3", "WEB_THREADS": "4", "RUN_LEASE_TTL_S": "1"}
    if request.param == "redis":
        extra["REDIS_URL"] = redis_url
    served = serve(tmp_path, **extra)
    try:
        yield served
    finally:
        stop_gunicorn(served.proc)


def test_workers_killed_at_random_under_load_lose_no_acknowledged_write(served):
    run_id = served.post(requests.Session(), "/runs", {}).json()["id"]
    rng = random.Random(7)
    kills = 0
    with Load(served, run_id) as load:
        wait_until(lambda: load.count(201) >= 50, "the first writes")
        while kills < 12:
            time.sleep(rng.uniform(0.1, 0.5))  # random moments, not synchronisation
            pids = worker_pids(served.proc.pid)
            if pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(rng.choice(pids), signal.SIGKILL)
                kills += 1
        before = load.count(201)
        wait_until(lambda: load.count(201) >= before + 50, "writes after the last kill")
    assert {status for status, _ in load.statuses} <= {201, 503}
    assert {code for status, code in load.statuses if status == 503} <= {"run_busy", "lease_lost"}
    check_run_database(served.run_db(run_id), load.acked)


def start_redis(port: int, directory: Path) -> subprocess.Popen:
    proc = subprocess.Popen(
        [
            "redis-server",
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(directory),
        ],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    wait_until(lambda: _pings(client), f"redis on port {port}")
    return proc


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def test_redis_stopped_under_load_gives_clean_503s_and_writes_resume_by_themselves(tmp_path):
    redis_port = free_port()
    redis_proc = start_redis(redis_port, tmp_path)
    served = serve(
        tmp_path,
        REDIS_URL=f"redis://127.0.0.1:{redis_port}/0",
        WEB_CONCURRENCY="2",
        WEB_THREADS="4",
    )
    try:
        run_id = served.post(requests.Session(), "/runs", {}).json()["id"]
        with Load(served, run_id) as load:
            wait_until(lambda: load.count(201) >= 100, "writes with Redis up")
            redis_proc.terminate()
            redis_proc.wait()
            wait_until(lambda: load.count(503) >= 20, "503s with Redis down")
            redis_proc = start_redis(redis_port, tmp_path)
            restarted = time.monotonic()
            ok_before = load.count(201)
            wait_until(lambda: load.count(201) > ok_before, "a write after the restart", 5.0)
            resumed_after = time.monotonic() - restarted
            wait_until(lambda: load.count(201) > ok_before + 100, "writes after the restart")
        assert resumed_after <= 5.0
        assert {status for status, _ in load.statuses} <= {201, 503}
        codes = {code for status, code in load.statuses if status == 503}
        assert "dependency_unavailable" in codes
        assert codes <= {"dependency_unavailable", "run_busy"}
        check_run_database(served.run_db(run_id), load.acked)
    finally:
        stop_gunicorn(served.proc)
        redis_proc.terminate()
        redis_proc.wait()
