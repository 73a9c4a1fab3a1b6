"""Async tool calls: enqueue -> succeeded latency and throughput with one Celery worker process,
beside the synchronous path in the same run.

Starts gunicorn (as `make run`, Redis mode) and one Celery worker process as `make worker` does
(Celery's threads pool, TOOL_WORKER_THREADS messages at once, each of the async calls one
group commit committed: decisions 0039, 0056) on a fresh DATA_DIR and Redis db (REDIS_URL,
default db 9 on loopback), then prints one JSON object:

- `async_done_ms_p50` / `_p99`: one `echo` at a time: POST `async: true` (202), then
  `GET .../tool-calls/{seq}?wait=5` until `succeeded`; milliseconds from the POST to the answer;
- `async_calls_per_s`: `wrk` (`bench/wrk/toolcalls.lua`, `--clients` connections, `--seconds`)
  posts async `echo` calls to one run; then every call must reach `succeeded`. Calls per
  second from the first call's `created_at` to the last one's `completed_at` (the server's
  clock: no polling in the figure);
- `async_enqueue_per_s`: the 202s per second `wrk` got (the web's share), with its p50/p99;
- `sync_calls_per_s`: synchronous calls on another run, by `wrk` over the same connections:
  POST a call (201), then PATCH its result (200); calls given their result per second (within
  `--clients` calls of exact: wrk stops with some calls posted and not yet given a result).

Any request that fails fails the benchmark (no rate is printed from a partial run).

Usage: .venv/bin/python bench/queue.py [--seconds 10] [--latency 200] [--clients 16]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import redis  # noqa: E402
import requests  # noqa: E402

from bench.loadgen import require_wrk, write_targets, wrk  # noqa: E402
from tests.processes import (  # noqa: E402
    PYTHON,
    free_port,
    manage,
    project_env,
    start_gunicorn,
    stop_gunicorn,
    wait_http,
)

DEADLINE_S = 60.0  # for one call to finish: a worker that never took it fails the bench
ASYNC_ECHO = json.dumps({"name": "echo", "args": {"i": 1}, "async": True})
SYNC_ECHO = json.dumps({"name": "echo", "args": {"i": 1}})


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    options = parser.parse_args()
    require_wrk()
    redis_url = os.environ.get("REDIS_URL", "redis://127.0.0.1:6379/9")
    redis.Redis.from_url(redis_url).flushdb()
    with tempfile.TemporaryDirectory(prefix="bench-queue-") as tmp:
        data_dir = Path(tmp)
        port = free_port()
        env = project_env(data_dir, PORT=str(port), ACCESS_LOG="", REDIS_URL=redis_url)
        manage(env, "migrate", "--no-input", "-v", "0")
        manage(env, "create_tenant", "bench")
        key = manage(env, "create_api_key", "bench").stdout.strip().splitlines()[-1]
        web = start_gunicorn(env, data_dir / "gunicorn.log")
        with (data_dir / "worker.log").open("wb") as log:
            worker = subprocess.Popen(
                [str(Path(PYTHON).parent / "celery"), "-A", "project", "worker",
                 "-l", "WARNING", "--without-gossip", "--without-mingle"],
                env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
            )  # fmt: skip
        try:
            base = f"http://127.0.0.1:{port}"
            wait_http(f"{base}/healthz")
            if worker.poll() is not None:
                raise SystemExit(f"the worker exited:\n{(data_dir / 'worker.log').read_text()}")
            result = _measure(base, key, options, data_dir)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            stop_gunicorn(web)
        redis.Redis.from_url(redis_url).flushdb()
    print(json.dumps({"bench": "queue", **result}))


def _measure(base: str, key: str, options: argparse.Namespace, tmp: Path) -> dict[str, float]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    run = session.post(f"{base}/api/v1/runs", json={}).json()["id"]
    calls = f"{base}/api/v1/runs/{run}/tool-calls"

    def async_echo(s: requests.Session, i: int) -> int:
        response = s.post(calls, json={"name": "echo", "args": {"i": i}, "async": True})
        assert response.status_code == 202, response.text
        return int(response.json()["seq"])

    def wait_done(s: requests.Session, seq: int, of: str = calls) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            response = s.get(f"{of}/{seq}", params={"wait": 5}, timeout=30)
            assert response.status_code == 200, response.text
            call = response.json()
            if call["status"] == "succeeded":
                return
            assert call["status"] in ("queued", "running"), call
            assert time.monotonic() < deadline, (
                f"call {seq} still {call['status']}: is the worker up?"
            )

    wait_done(session, async_echo(session, -1))  # the worker is up and warm
    latencies = []
    for i in range(options.latency):
        started = time.perf_counter()
        wait_done(session, async_echo(session, i))
        latencies.append((time.perf_counter() - started) * 1000)

    def calls_of(run_id: str) -> list[dict]:
        found, after = [], 0
        while True:
            page = session.get(
                f"{base}/api/v1/runs/{run_id}/tool-calls",
                params={"after": after, "limit": 500},
                timeout=30,
            )
            assert page.status_code == 200, page.text
            found += page.json()["items"]
            if not page.json()["next"]:
                return found
            after = page.json()["next"]

    def load(run_id: str, mode: str, body: str) -> dict:
        host = base.removeprefix("http://")
        targets = write_targets(tmp / f"{run_id}.targets", [[host, key, run_id]])
        return wrk(
            base,
            targets,
            mode=mode,
            connections=options.clients,
            seconds=options.seconds,
            prefix="/api/v1",
            body=body,
        )

    def at(text: str) -> float:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()

    flood = session.post(f"{base}/api/v1/runs", json={}).json()["id"]
    posted = load(flood, "post", ASYNC_ECHO)
    flood_calls = f"{base}/api/v1/runs/{flood}/tool-calls"
    for call in calls_of(flood):
        if call["status"] != "succeeded":
            wait_done(session, call["seq"], flood_calls)
    async_calls = calls_of(flood)
    # wrk stops counting at its deadline; the calls it had in flight were recorded all the same.
    assert 0 <= len(async_calls) - posted["requests"] <= options.clients, len(async_calls)
    span = max(at(c["completed_at"]) for c in async_calls) - min(
        at(c["created_at"]) for c in async_calls
    )

    plain = session.post(f"{base}/api/v1/runs", json={}).json()["id"]
    synced = load(plain, "sync", SYNC_ECHO)
    given = sum(1 for call in calls_of(plain) if call["status"] == "succeeded")
    return {
        "async_done_ms_p50": round(statistics.median(latencies), 2),
        "async_done_ms_p99": round(_percentile(latencies, 0.99), 2),
        "async_calls_per_s": round(len(async_calls) / span, 1),
        "async_calls": len(async_calls),
        "async_enqueue_per_s": round(posted["rps"], 1),
        "async_enqueue_p50_ms": round(posted["p50_ms"], 2),
        "async_enqueue_p99_ms": round(posted["p99_ms"], 2),
        "sync_calls_per_s": round(given / synced["seconds"], 1),
        "sync_requests_p99_ms": round(synced["p99_ms"], 2),
        "clients": options.clients,
    }


if __name__ == "__main__":
    main()
