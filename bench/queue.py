"""Async tool calls: enqueue -> succeeded latency and throughput with one Celery worker process,
beside the synchronous path in the same run.

Starts gunicorn (as `make run`, Redis mode) and one Celery worker process as `make worker` does
(Celery's threads pool, TOOL_WORKER_THREADS calls at once: decision 0039) on a fresh DATA_DIR
and Redis db (REDIS_URL, default db 9 on loopback), then prints one JSON object:

- `async_done_ms_p50` / `_p99`: one `echo` at a time: POST `async: true` (202), then
  `GET .../tool-calls/{seq}?wait=5` until `succeeded`; milliseconds from the POST to the answer;
- `async_calls_per_s`: `--calls` async `echo` calls posted by `--clients` threads, from the
  first POST to the last call recorded `succeeded`. Each client long-polls its last call only,
  then one pass over the run's list finds (and waits for) any call not finished: one wait per
  call would make the client, not the queue, the bottleneck on a small machine;
- `async_enqueue_per_s`: the same calls, from the first POST to the last 202 (the web's share);
- `sync_calls_per_s`: the same number of synchronous calls (POST, then PATCH the result) by the
  same clients, in the same run.

Any request that fails fails the benchmark (no rate is printed from a partial run).

Usage: .venv/bin/python bench/queue.py [--calls 2000] [--latency 200] [--clients 16]
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import redis  # noqa: E402
import requests  # noqa: E402

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


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--latency", type=int, default=200)
    parser.add_argument("--clients", type=int, default=16)
    options = parser.parse_args()
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
            result = _measure(base, key, options)
        finally:
            worker.terminate()
            worker.wait(timeout=30)
            stop_gunicorn(web)
        redis.Redis.from_url(redis_url).flushdb()
    print(json.dumps({"bench": "queue", **result}))


def _measure(base: str, key: str, options: argparse.Namespace) -> dict[str, float]:
    session = requests.Session()
    session.headers["Authorization"] = f"Bearer {key}"
    run = session.post(f"{base}/api/v1/runs", json={}).json()["id"]
    calls = f"{base}/api/v1/runs/{run}/tool-calls"

    def async_echo(s: requests.Session, i: int) -> int:
        response = s.post(calls, json={"name": "echo", "args": {"i": i}, "async": True})
        assert response.status_code == 202, response.text
        return int(response.json()["seq"])

    def wait_done(s: requests.Session, seq: int) -> None:
        deadline = time.monotonic() + DEADLINE_S
        while True:
            response = s.get(f"{calls}/{seq}", params={"wait": 5}, timeout=30)
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

    def in_threads(work) -> float:
        per_client = options.calls // options.clients
        errors: list[BaseException] = []

        def guarded(n: int) -> None:
            try:
                work(n)
            except BaseException as exc:
                errors.append(exc)

        started = time.perf_counter()
        threads = [
            threading.Thread(target=guarded, args=(per_client,)) for _ in range(options.clients)
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise SystemExit(f"{len(errors)} client(s) failed; the first: {errors[0]!r}")
        return per_client * options.clients / (time.perf_counter() - started)

    enqueued: list[float] = []

    def async_client(n: int) -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        seqs = [async_echo(s, i) for i in range(n)]
        enqueued.append(time.perf_counter())
        wait_done(s, seqs[-1])

    def all_done() -> None:
        after = 0
        while True:
            page = session.get(calls, params={"after": after, "limit": 200}, timeout=30)
            assert page.status_code == 200, page.text
            for call in page.json()["items"]:
                if call["status"] != "succeeded":
                    wait_done(session, call["seq"])
            if not page.json()["next"]:
                return
            after = page.json()["next"]

    def sync_client(n: int) -> None:
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {key}"
        for i in range(n):
            response = s.post(calls, json={"name": "echo", "args": {"i": i}})
            assert response.status_code == 201, response.text
            seq = response.json()["seq"]
            assert s.patch(f"{calls}/{seq}", json={"result": {"i": i}}).status_code == 200

    total = options.calls // options.clients * options.clients
    started = time.perf_counter()
    in_threads(async_client)
    all_done()
    async_rate = total / (time.perf_counter() - started)
    enqueue_rate = total / (max(enqueued) - started)
    sync_rate = in_threads(sync_client)
    return {
        "async_done_ms_p50": round(statistics.median(latencies), 2),
        "async_done_ms_p99": round(_percentile(latencies, 0.99), 2),
        "async_calls_per_s": round(async_rate, 1),
        "async_enqueue_per_s": round(enqueue_rate, 1),
        "sync_calls_per_s": round(sync_rate, 1),
    }


if __name__ == "__main__":
    main()
