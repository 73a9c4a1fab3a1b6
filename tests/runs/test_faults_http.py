"""Fault handling through a real gunicorn (decisions 0017, 0018): vanished, replaced, truncated,
damaged and read-only database files, and a low descriptor limit."""

import json
import os
import random
import re
import sqlite3
import subprocess
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import requests

from tests.processes import Live, kill_gunicorn, manage, serve, stop_gunicorn

pytestmark = pytest.mark.processes


@pytest.fixture
def gunicorn_server(request, tmp_path) -> Iterator[Callable[..., Live]]:
    started: list[Live] = []

    def start(slugs: list[str], **kw) -> Live:
        started.append(serve(tmp_path, slugs, **kw))
        return started[-1]

    yield start
    for live in started:
        kill_gunicorn(live.proc)


def db_file(live: Live, relpath: str) -> Path:
    return live.data_dir / relpath


def sidecars(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("-wal", "-shm")]


def tenant_db(live: Live, slug: str) -> str:
    with sqlite3.connect(live.data_dir / "control.sqlite3") as conn:
        (relpath,) = conn.execute(
            "SELECT d.path FROM tenants_database d JOIN tenants_tenant t ON t.database_id = d.id "
            "WHERE t.slug = ?",
            (slug,),
        ).fetchone()
    return relpath


def run_db(live: Live, run_id: str) -> str:
    with sqlite3.connect(live.data_dir / "control.sqlite3") as conn:
        (relpath,) = conn.execute(
            "SELECT d.path FROM tenants_database d JOIN runs_run r ON r.database_id = d.id "
            "WHERE r.id = ?",
            (run_id,),
        ).fetchone()
    return relpath


# --- Vanished, replaced and truncated files under a running server -------------------------------


def delete(path: Path) -> None:
    for file in [path, *sidecars(path)]:
        file.unlink(missing_ok=True)


def replace(path: Path) -> None:
    """Restore-style replacement: a consistent copy renamed over the file, sidecars removed."""
    copy = path.with_name("replacement.tmp")
    with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as source, sqlite3.connect(copy) as to:
        source.backup(to)
    os.replace(copy, path)
    for file in sidecars(path):
        file.unlink(missing_ok=True)


def truncate(path: Path) -> None:
    os.truncate(path, 0)


FAULTS = {"delete": delete, "replace": replace, "truncate": truncate}


def test_vanished_replaced_or_truncated_files_lose_no_acknowledged_write(gunicorn_server):
    live = gunicorn_server(["delete", "replace", "truncate", "runs"])
    targets: dict[str, dict] = {}
    for fault in FAULTS:
        targets[f"tenant-{fault}"] = {"slug": fault, "kind": "memory", "fault": fault}
        run = live.call("runs", "POST", "/runs", {}).json()
        targets[f"run-{fault}"] = {"slug": "runs", "kind": "run", "run": run["id"], "fault": fault}
    for target in targets.values():
        relpath = tenant_db(live, target["slug"]) if target["kind"] == "memory" else None
        target["relpath"] = relpath or run_db(live, target["run"])

    def write(name: str, i: int) -> tuple[str, str, int, str]:
        target = targets[name]
        key = f"{name}-{i}"
        if target["kind"] == "memory":
            response = live.call(target["slug"], "PUT", f"/memory/{key}", {"value": i})
        else:
            response = live.call(
                "runs",
                "POST",
                f"/runs/{target['run']}/tool-calls",
                {"name": "w", "args": {"i": i}, "idempotency_key": key},
            )
        code = response.json()["error"]["code"] if response.status_code >= 400 else ""
        return name, key, response.status_code, code

    with ThreadPoolExecutor(8) as pool:
        # Warm: cached connections in many of the server's threads.
        before = list(pool.map(lambda a: write(*a), [(n, i) for n in targets for i in range(16)]))
        assert {status for _, _, status, _ in before} <= {200, 201}, before
        for target in targets.values():
            FAULTS[target["fault"]](db_file(live, target["relpath"]))
        # Every request below is sent after the faults.
        after = list(
            pool.map(lambda a: write(*a), [(n, i) for n in targets for i in range(16, 48)])
        )
    kill_gunicorn(live.proc)  # as a crash would: what is on disk now is what a restart sees

    assert all(status in (200, 201, 503) for _, _, status, _ in after), after
    assert all(code == "database_unavailable" for _, _, status, code in after if status == 503)
    acked = {
        name: [key for n, key, status, _ in after if n == name and status < 300] for name in targets
    }
    for name, target in targets.items():
        path = db_file(live, target["relpath"])
        if target["fault"] == "delete":
            assert acked[name] == [] and not path.exists(), name  # never recreated
            continue
        if target["fault"] == "truncate":
            assert acked[name] == [], name
            continue
        assert acked[name], f"{name}: the replacement was never served"
        with sqlite3.connect(path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
            if target["kind"] == "memory":
                stored = {k for (k,) in conn.execute("SELECT key FROM tenants_memoryentry")}
            else:
                stored = {k for (k,) in conn.execute("SELECT idempotency_key FROM runs_toolcall")}
        lost = [key for key in acked[name] if key not in stored]
        assert not lost, f"{name}: acknowledged writes lost: {lost}"
    registry = live.registry()
    for target in targets.values():
        if target["fault"] != "replace":
            assert registry[target["relpath"]][0] in ("missing", "damaged"), target


# --- A damaged run database ----------------------------------------------------------------------


def test_damaged_run_answers_503_and_can_be_completed_as_failed(gunicorn_server):
    live = gunicorn_server(["acme"], TENANT_MAX_ACTIVE_RUNS="2")
    damaged = live.call("acme", "POST", "/runs", {}).json()["id"]
    healthy = live.call("acme", "POST", "/runs", {}).json()["id"]
    for run_id in (damaged, healthy):
        for i in range(4):
            response = live.call("acme", "POST", f"/runs/{run_id}/tool-calls", {"name": f"t{i}"})
            assert response.status_code == 201
    assert live.call("acme", "POST", "/runs", {}).status_code == 429
    path = db_file(live, run_db(live, damaged))
    with path.open("r+b") as file:  # garbage over the header, in place
        file.write(os.urandom(8192))

    calls = [
        ("GET", f"/runs/{damaged}", None),
        ("GET", f"/runs/{damaged}/tool-calls", None),
        ("GET", f"/runs/{damaged}/events", None),
        ("GET", f"/runs/{damaged}/state", None),
        ("POST", f"/runs/{damaged}/tool-calls", {"name": "x"}),
        ("POST", f"/runs/{damaged}/events", {"events": [{"kind": "x"}]}),
        ("PUT", f"/runs/{damaged}/state", {"state": 1, "version": 0}),
        ("POST", f"/runs/{damaged}/complete", {"status": "succeeded"}),
    ] * 3  # a few rounds: several server threads, cached and new connections
    for method, url, body in calls:
        response = live.call("acme", method, url, body)
        assert response.status_code == 503, (method, url, response.content)
        assert response.json()["error"]["code"] == "database_unavailable"
    assert live.call("acme", "GET", f"/runs/{healthy}/tool-calls").status_code == 200

    state, error = live.registry()[run_db(live, damaged)]
    assert state == "damaged" and error
    health = requests.get(f"{live.root}/healthz", timeout=10)
    assert health.status_code == 200
    assert health.json()["status"] == "degraded"
    assert health.json()["databases"]["damaged"] == 1
    stats = manage(live.env, "dbstats", "--json").stdout.strip().splitlines()
    assert json.loads(stats[-1])["problems"] == {"damaged": 1}

    done = live.call("acme", "POST", f"/runs/{damaged}/complete", {"status": "failed"})
    assert done.status_code == 200, done.content
    body = done.json()
    assert body["status"] == "failed" and body["counts"] is None
    assert body["database_state"] == "damaged" and "without its database" in body["database_error"]
    assert live.call("acme", "POST", "/runs", {}).status_code == 201  # the slot is free again
    again = live.call("acme", "POST", f"/runs/{damaged}/complete", {"status": "failed"})
    assert again.status_code == 409


# --- A read-only fault, then cleared --------------------------------------------------------------


def chattr(flag: str, *paths: Path) -> None:
    result = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(
            f"chattr {flag} failed ({result.stderr.strip()}): this test needs root on a "
            "filesystem with immutable attributes (ext4, xfs, btrfs)."
        )


def test_read_only_fault_then_cleared_lets_the_next_write_succeed(gunicorn_server):
    live = gunicorn_server(["acme"])
    run_id = live.call("acme", "POST", "/runs", {}).json()["id"]

    def record(i: int) -> requests.Response:
        return live.call("acme", "POST", f"/runs/{run_id}/tool-calls", {"name": f"t{i}"})

    with ThreadPoolExecutor(8) as pool:
        assert {r.status_code for r in pool.map(record, range(16))} == {201}
        path = db_file(live, run_db(live, run_id))
        # Immutable: refused even to root. Not the -shm: SQLite maps it (a write would SIGBUS).
        immutable = [path, path.with_name(path.name + "-wal")]
        chattr("+i", *immutable)
        try:
            during = list(pool.map(record, range(16, 48)))
        finally:
            chattr("-i", *immutable)
        assert {r.status_code for r in during} == {503}, [r.content for r in during]
        assert {r.json()["error"]["code"] for r in during} == {"database_unavailable"}
        # The very next write succeeds, and so does every one after it, on every thread.
        assert record(48).status_code == 201
        assert {r.status_code for r in pool.map(record, range(49, 81))} == {201}
    assert live.registry()[run_db(live, run_id)][0] == "ready"


# --- A low descriptor limit ----------------------------------------------------------------------


def worker_pids(log: Path) -> list[str]:
    return re.findall(r"Booting worker with pid: (\d+)", log.read_text())


def rss_kib(pid: str) -> int:
    with open(f"/proc/{pid}/status") as status:
        return int(next(line for line in status if line.startswith("VmRSS:")).split()[1])


def test_ulimit_256_with_16_clients_over_300_runs_drops_nothing(gunicorn_server):
    live = gunicorn_server(["acme"], nofile=256, WEB_CONCURRENCY="2", WEB_THREADS="8")
    log = live.data_dir / "gunicorn.log"
    workers = worker_pids(log)
    assert len(workers) == 2
    with ThreadPoolExecutor(16) as pool:
        runs = list(pool.map(lambda _: live.call("acme", "POST", "/runs", {}), range(300)))
        assert {r.status_code for r in runs} == {201}, {r.status_code for r in runs}
        run_ids = [r.json()["id"] for r in runs]
        rng = random.Random(7)
        plan = [(rng.choice(run_ids), i) for i in range(1200)]

        def one(item: tuple[str, int]) -> int:
            run_id, i = item
            if i % 3 == 2:
                return live.call("acme", "GET", f"/runs/{run_id}/events?limit=5").status_code
            body = {"events": [{"kind": "step", "payload": {"i": i}}]}
            return live.call("acme", "POST", f"/runs/{run_id}/events", body).status_code

        # A dropped connection raises here (requests.ConnectionError), failing the test.
        statuses = list(pool.map(one, plan))
    assert sorted(set(statuses)) in ([200, 201], [201, 200]), {
        s: statuses.count(s) for s in set(statuses)
    }
    assert worker_pids(log) == workers, log.read_text()[-3000:]  # no worker exited or restarted
    for pid in workers:
        # README: worst-case RSS per worker = 150 MiB + open databases x (cache + 256 KiB).
        assert rss_kib(pid) <= 150 * 1024 + 24 * (256 + 256), rss_kib(pid)
    assert "Too many open files" not in log.read_text()
    stop_gunicorn(live.proc)
