"""Tool-call endpoints over HTTP: a database per run against one shared database, same run.

Two gunicorn servers run the same code with the same settings (`project/gunicorn.conf.py`:
2 processes x 8 threads) on loopback; one routes every run to its own SQLite file (the product),
the other sends every run's rows to one shared SQLite file (the "one big database" design).
Runs are spread over 10 tenants. For concurrency 16 and 64 the client drives, in turn,
`POST /runs/{id}/tool-calls`, `PATCH .../tool-calls/{seq}` (result) and `GET .../tool-calls/{seq}`,
alternating routed and shared rounds, and prints one JSON object: req/s and p50/p99 per case,
the median over rounds, and the routed/shared ratio.

The baseline is generous to the shared design: its rows carry no run column or composite index
(sequence numbers are global there), so it does less work per request than a real one would.

Usage: .venv/bin/python bench/http.py [--requests 1600] [--rounds 3]
"""

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path and this module would shadow the
# standard library's `http`; put the project root there instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse  # noqa: E402
import http.client  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402

from tests.processes import (  # noqa: E402
    free_port,
    manage,
    project_env,
    start_gunicorn,
    stop_gunicorn,
    wait_http,
)

TENANTS = 10
RUNS_PER_TENANT = 4
CONCURRENCY = (16, 64)

SETUP = """
import json
from runs.services import run_create
from tenants.services import api_key_create, tenant_create
out = []
for i in range({tenants}):
    tenant = tenant_create(slug=f"bench-{{i}}")
    key = api_key_create(tenant=tenant)[1]
    out += [[key, run_create(tenant=tenant).id] for _ in range({runs})]
print(json.dumps(out))
"""


def env_for(data_dir: Path, port: int, shared_db: str = "") -> dict[str, str]:
    return project_env(
        data_dir,
        DJANGO_SETTINGS_MODULE="bench.settings_http",
        BENCH_SHARED_RUNS_DB=shared_db,
        LOG_LEVEL="ERROR",
        ACCESS_LOG="",
        PORT=str(port),
        TENANT_MAX_ACTIVE_RUNS="100000",
    )


def drive(port: int, requests: list[tuple[str, str, str, bytes | None]], concurrency: int):
    """Send `requests` with `concurrency` keep-alive clients; return (rps, latencies, answers)."""
    latencies: list[float] = []
    answers: list[tuple[int, dict]] = [(0, {})] * len(requests)
    lock = threading.Lock()

    def worker(offset: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        mine = []
        for index in range(offset, len(requests), concurrency):
            method, path, key, body = requests[index]
            headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
            started = time.perf_counter()
            conn.request(method, path, body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - started)
            answers[index] = (response.status, json.loads(payload))
        conn.close()
        with lock:
            latencies.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.perf_counter() - started
    bad = [a for a in answers if a[0] >= 300]
    if bad:
        raise SystemExit(f"{len(bad)} requests failed, e.g. {bad[0]}")
    return len(requests) / elapsed, latencies, answers


def one_round(port: int, runs: list[list[str]], n: int, concurrency: int) -> dict[str, dict]:
    posts = []
    for i in range(n):
        key, run_id = runs[i % len(runs)]
        body = json.dumps({"name": "search", "args": {"q": f"query {i}", "k": 5}}).encode()
        posts.append(("POST", f"/api/v1/runs/{run_id}/tool-calls", key, body))
    rps, lat, answers = drive(port, posts, concurrency)
    cases = {"post": (rps, lat)}
    done = [(posts[i][1], posts[i][2], answers[i][1]["seq"]) for i in range(n)]
    result = json.dumps({"result": {"hits": ["a", "b", "c"]}, "duration_ms": 12.5}).encode()
    patches = [("PATCH", f"{path}/{seq}", key, result) for path, key, seq in done]
    rps, lat, _ = drive(port, patches, concurrency)
    cases["patch"] = (rps, lat)
    gets = [("GET", f"{path}/{seq}", key, None) for path, key, seq in done]
    rps, lat, _ = drive(port, gets, concurrency)
    cases["get"] = (rps, lat)
    return {
        case: {
            "rps": rps,
            "p50_ms": statistics.median(lat) * 1000,
            "p99_ms": statistics.quantiles(lat, n=100)[98] * 1000,
        }
        for case, (rps, lat) in cases.items()
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=1600, help="per case and round")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-http-") as tmp:
        data_dir = Path(tmp)
        shared_db = data_dir / "shared-runs.sqlite3"
        routed_port, shared_port = free_port(), free_port()
        routed_env = env_for(data_dir, routed_port)
        shared_env = env_for(data_dir, shared_port, str(shared_db))
        manage(routed_env, "migrate", "--no-input", "-v", "0")
        runs = json.loads(
            manage(routed_env, "shell", "-c", SETUP.format(tenants=TENANTS, runs=RUNS_PER_TENANT))
            .stdout.strip()
            .splitlines()[-1]
        )
        # The shared database starts as a copy of the same pre-migrated run template.
        template = next((data_dir / "templates").glob("run-*.sqlite3"))
        shared_db.write_bytes(template.read_bytes())

        servers = [
            start_gunicorn(env, data_dir / f"gunicorn-{env['PORT']}.log")
            for env in (routed_env, shared_env)
        ]
        try:
            for port in (routed_port, shared_port):
                wait_http(f"http://127.0.0.1:{port}/healthz")
            results: dict[str, list[dict]] = {}
            for concurrency in CONCURRENCY:
                for port in (routed_port, shared_port):
                    one_round(port, runs, 200, concurrency)  # warm connections and caches
                for _ in range(args.rounds):
                    for design, port in (("routed", routed_port), ("shared", shared_port)):
                        results.setdefault(f"{design}_c{concurrency}", []).append(
                            one_round(port, runs, args.requests, concurrency)
                        )
        finally:
            for server in servers:
                stop_gunicorn(server)

    out: dict[str, object] = {
        "bench": "http",
        "tenants": TENANTS,
        "runs": TENANTS * RUNS_PER_TENANT,
        "requests_per_case": args.requests,
        "rounds": args.rounds,
        "server": "gunicorn gthread, 2 processes x 8 threads",
    }
    for concurrency in CONCURRENCY:
        for case in ("post", "patch", "get"):
            for design in ("routed", "shared"):
                rounds = results[f"{design}_c{concurrency}"]
                prefix = f"{design}" if case == "post" else f"{design}_{case}"
                out[f"{prefix}_rps_c{concurrency}"] = round(
                    statistics.median(r[case]["rps"] for r in rounds), 1
                )
                out[f"{prefix}_p50_ms_c{concurrency}"] = round(
                    statistics.median(r[case]["p50_ms"] for r in rounds), 2
                )
                out[f"{prefix}_p99_ms_c{concurrency}"] = round(
                    statistics.median(r[case]["p99_ms"] for r in rounds), 2
                )
            routed_key = "routed" if case == "post" else f"routed_{case}"
            shared_key = "shared" if case == "post" else f"shared_{case}"
            out[f"ratio_{case}_c{concurrency}"] = round(
                out[f"{routed_key}_rps_c{concurrency}"] / out[f"{shared_key}_rps_c{concurrency}"], 3
            )
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
