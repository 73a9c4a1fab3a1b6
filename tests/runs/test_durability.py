"""A 2xx means committed: kill -9 the whole server mid-stream, then count what was acknowledged."""

import sqlite3
import threading
import time

import pytest
import requests

from tests.processes import (
    free_port,
    kill_gunicorn,
    migrate_with_tenants,
    project_env,
    start_gunicorn,
    wait_http,
)

pytestmark = pytest.mark.processes

WRITERS = 8
ACKS_BEFORE_KILL = 150


def test_kill_9_loses_no_acknowledged_write(tmp_path):
    data_dir = tmp_path / "data"
    port = free_port()
    env = project_env(data_dir, PORT=str(port), ACCESS_LOG="")
    key = migrate_with_tenants(env, "acme")["acme"]
    server = start_gunicorn(env, data_dir / "gunicorn.log")
    base = f"http://127.0.0.1:{port}/api/v1"
    headers = {"Authorization": f"Bearer {key}"}
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz")
        run = requests.post(f"{base}/runs", json={}, headers=headers, timeout=10).json()
        acked: list[tuple[int, str]] = []
        lock = threading.Lock()
        stop = threading.Event()

        def writer(w: int) -> None:
            session = requests.Session()
            i = 0
            while not stop.is_set():
                ikey = f"w{w}-{i}"
                try:
                    response = session.post(
                        f"{base}/runs/{run['id']}/tool-calls",
                        json={"name": "write", "args": {"w": w, "i": i}, "idempotency_key": ikey},
                        headers=headers,
                        timeout=10,
                    )
                except requests.RequestException:
                    return  # the server is gone
                if response.status_code == 201:
                    with lock:
                        acked.append((response.json()["seq"], ikey))
                i += 1

        threads = [threading.Thread(target=writer, args=(w,)) for w in range(WRITERS)]
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 60
        while len(acked) < ACKS_BEFORE_KILL and time.monotonic() < deadline:
            time.sleep(0.01)
        kill_gunicorn(server)  # mid-stream: requests are in flight
        stop.set()
        for thread in threads:
            thread.join()
    finally:
        kill_gunicorn(server)

    assert len(acked) >= ACKS_BEFORE_KILL
    run_file = next((data_dir / "tenants").glob("*/runs/*.sqlite3"))
    with sqlite3.connect(run_file) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        stored = dict(conn.execute("SELECT seq, idempotency_key FROM runs_toolcall"))
    for seq, ikey in acked:
        assert stored.get(seq) == ikey, f"acknowledged call {seq} ({ikey}) was lost"
    assert sorted(stored) == list(range(1, len(stored) + 1))  # gapless after the crash
    with sqlite3.connect(data_dir / "control.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
