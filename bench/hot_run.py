"""One hot run: writes per second through the run's single writer, driven by `wrk`.

Servers run as `make run` starts them (gunicorn gthread, 2 processes x 8 threads unless
`WEB_CONCURRENCY` / `WEB_THREADS` say otherwise, access log off) in Redis mode (leases in
Redis); `wrk` (a C client, so the client costs little of the two cores) drives one run at a
time, each case for `--seconds`, and prints one JSON object:

- `single_posts_per_s_c{1,16,64}` / `_p50_ms_` / `_p99_ms_`: `POST /runs/{id}/tool-calls`;
- `batch_events_per_s`: `POST /runs/{id}/events` with `--batch` events a request (c=16);
- references, in the same sitting: `raw_executemany_rows_per_s` (the same event rows through
  `sqlite3.executemany`, 1,000 per transaction, into a fresh file: the physical limit),
  `noop_rps_c64` (an authenticated no-op endpoint of the same server: the HTTP floor) and
  `naive_posts_per_s_c64` (RUN_WRITE_BATCH_MAX=1: take the lease, write one row, commit,
  release, per request: the same lease and wait strategy without group commit);
- `single_posts_per_s_c64_full` / `_normal`: run databases at `synchronous=FULL` (the default)
  and NORMAL;
- `batch_events_per_s_no_audit`: the batch case with the audit trail off (`AUDIT_RUNS=0`), to
  read the trail's cost beside `batch_events_per_s` (target: at most 10%).

Usage: .venv/bin/python bench/hot_run.py [--seconds 10] [--batch 1000]. Needs `wrk` (Debian:
apt-get install wrk; `make bench` installs it) and Redis (REDIS_URL, default db 9 on loopback).
"""

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# Run as a script, this folder would come first on sys.path, where a module named like one of
# the standard library's would shadow it; put the project root there instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from bench.loadgen import server_shape, wrk_command  # noqa: E402
from tests.processes import (  # noqa: E402
    free_port,
    manage,
    project_env,
    start_gunicorn,
    stop_gunicorn,
    wait_http,
)

WRK_SCRIPT = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {key}"
wrk.body = [[{body}]]
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "duration_us": %d, "socket_errors": %d, "non_2xx": %d, '
    .. '"p50_us": %d, "p99_us": %d}}\\n',
    summary.requests, summary.duration, e.connect + e.read + e.write + e.timeout, e.status,
    latency:percentile(50), latency:percentile(99)))
end
"""

SETUP = """
import json
from runs.services import run_create
from tenants.services import api_key_create, tenant_create
tenant = tenant_create(slug="hot")
key = api_key_create(tenant=tenant)[1]
print(json.dumps({{"key": key, "runs": [run_create(tenant=tenant).id for _ in range({n})]}}))
"""


def wrk(url: str, key: str, body: str, *, connections: int, seconds: float, tmp: Path) -> dict:
    script = tmp / f"wrk-{time.monotonic_ns()}.lua"
    script.write_text(WRK_SCRIPT.format(key=key, body=body))
    out = subprocess.run(
        wrk_command(url, script, connections=connections, seconds=seconds),
        capture_output=True,
        text=True,
        check=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["rps"] = result["requests"] / (result["duration_us"] / 1e6)
    if result["non_2xx"] or result["socket_errors"]:
        # Errors are fast answers that would inflate the figure: refuse to report it.
        raise SystemExit(f"{url}: {result['non_2xx']} non-2xx, {result['socket_errors']} errors")
    return result


class Server:
    def __init__(self, tmp: Path, name: str, runs: int, **extra: str):
        self.port = free_port()
        data_dir = tmp / name
        self.env = project_env(
            data_dir,
            DJANGO_SETTINGS_MODULE="bench.settings_hot",
            PORT=str(self.port),
            ACCESS_LOG="",
            LOG_LEVEL="ERROR",
            REDIS_URL=os.environ.get("REDIS_URL") or "redis://127.0.0.1:6379/9",
            **extra,
        )
        manage(self.env, "migrate", "--no-input", "-v", "0")
        setup = manage(self.env, "shell", "-c", SETUP.format(n=runs)).stdout
        made = json.loads(setup.strip().splitlines()[-1])
        self.key, self.runs = made["key"], made["runs"]
        self.proc = start_gunicorn(self.env, tmp / f"{name}.log")
        self.base = f"http://127.0.0.1:{self.port}"
        wait_http(f"{self.base}/healthz")

    def url(self, path: str) -> str:
        return f"{self.base}/api/v1{path}"

    def stop(self) -> None:
        stop_gunicorn(self.proc)


def raw_executemany(tmp: Path, rows: int, payload: str) -> float:
    """Rows/s of the same event rows inserted with sqlite3 executemany, 1,000 a transaction."""
    path = tmp / "raw.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE runs_event (seq integer PRIMARY KEY AUTOINCREMENT, kind varchar(100), "
        "payload text, created_at datetime)"
    )
    conn.execute("CREATE INDEX runs_event_kind ON runs_event (kind)")
    batch = [("step", payload, "2026-01-01 00:00:00")] * 1000
    started = time.perf_counter()
    for _ in range(rows // 1000):
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(
            "INSERT INTO runs_event (kind, payload, created_at) VALUES (?, ?, ?)", batch
        )
        conn.execute("COMMIT")
    elapsed = time.perf_counter() - started
    conn.close()
    return rows // 1000 * 1000 / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=10)
    parser.add_argument("--batch", type=int, default=1000, help="events per batched request")
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not installed: apt-get install wrk (make bench does it)")

    tool_call = json.dumps({"name": "search", "args": {"q": "flights to LIS", "k": 5}})
    payload = {"step": 1, "tokens": 42, "note": "thinking about the next tool"}
    events = json.dumps({"events": [{"kind": "step", "payload": payload}] * args.batch})
    out: dict[str, object] = {
        "bench": "hot_run",
        "server": f"gunicorn gthread, {server_shape()} (processes x threads), Redis leases",
        "seconds_per_case": args.seconds,
        "events_per_batch": args.batch,
    }
    with tempfile.TemporaryDirectory(prefix="bench-hot-") as tmp_name:
        tmp = Path(tmp_name)
        out["raw_executemany_rows_per_s"] = round(
            raw_executemany(tmp, 200_000, json.dumps(payload))
        )

        def run_cases(server: Server, suffix: str, cases: list[tuple[str, int]]) -> None:
            for index, (case, connections) in enumerate(cases):
                run_id = server.runs[index]
                path, body = (
                    (f"/runs/{run_id}/events", events)
                    if case == "batch"
                    else (f"/runs/{run_id}/tool-calls", tool_call)
                    if case == "single"
                    else ("/noop", tool_call)
                )
                # A short warm-up (connections, caches, the run's file), then the measured case.
                wrk(server.url(path), server.key, body, connections=connections, seconds=1, tmp=tmp)
                result = wrk(
                    server.url(path),
                    server.key,
                    body,
                    connections=connections,
                    seconds=args.seconds,
                    tmp=tmp,
                )
                name = {"single": "single_posts", "batch": "batch", "noop": "noop"}[case]
                rate = result["rps"] * (args.batch if case == "batch" else 1)
                unit = {"single": "per_s", "batch": "events_per_s", "noop": "rps"}[case]
                key = f"{name}_{unit}" if case == "batch" else f"{name}_{unit}_c{connections}"
                out[key + suffix] = round(rate, 1)
                out[f"{name}_p50_ms_c{connections}{suffix}"] = round(result["p50_us"] / 1000, 2)
                out[f"{name}_p99_ms_c{connections}{suffix}"] = round(result["p99_us"] / 1000, 2)

        product_cases = [("noop", 64), ("single", 1), ("single", 16), ("single", 64), ("batch", 16)]
        for name, extra, cases, suffix in (
            ("full", {"RUN_SQLITE_SYNCHRONOUS": "FULL"}, product_cases, ""),
            ("normal", {"RUN_SQLITE_SYNCHRONOUS": "NORMAL"}, [("single", 64)], "_normal"),
            ("naive", {"RUN_WRITE_BATCH_MAX": "1"}, [("single", 64)], "_naive"),
            # The audit trail's cost: the same batches with AUDIT_RUNS off (benchmarks only).
            ("noaudit", {"AUDIT_RUNS": "0"}, [("batch", 16)], "_no_audit"),
        ):
            server = Server(tmp, name, runs=len(cases), **extra)
            try:
                run_cases(server, suffix, cases)
            finally:
                server.stop()

    out["single_posts_per_s_c64_full"] = out["single_posts_per_s_c64"]
    out["naive_posts_per_s_c64"] = out.pop("single_posts_per_s_c64_naive")
    ratios = {
        "ratio_batch_events_to_raw": out["batch_events_per_s"] / out["raw_executemany_rows_per_s"],
        "ratio_single_c64_to_noop": out["single_posts_per_s_c64"] / out["noop_rps_c64"],
        "ratio_group_commit_to_naive_c64": out["single_posts_per_s_c64"]
        / out["naive_posts_per_s_c64"],
        "ratio_full_to_normal_c64": out["single_posts_per_s_c64_full"]
        / out["single_posts_per_s_c64_normal"],
        "ratio_batch_audit_to_no_audit": out["batch_events_per_s"]
        / out["batch_events_per_s_no_audit"],
    }
    out.update({k: round(v, 3) for k, v in ratios.items()})  # type: ignore[arg-type]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
