"""Cost grows with work, not with the number of databases: 100,000 tenants, 10 hot or 10,000.

Registers `--tenants` tenants (default 100,000) in bulk: template copies written without fsync
(benchmark data) and control-plane rows inserted 5,000 at a time, the same rows
`tenant_create` writes. Then `--hot-tenants` tenants (10) get an API key and `--hot-runs` runs
each (10), and `--spread-tenants` other tenants (10,000, drawn at random) a key and one run each,
through the services; every run gets `--seed-calls` tool calls over HTTP. The server runs as
`make run` starts it (gunicorn gthread 2 x 8 unless `WEB_CONCURRENCY` / `WEB_THREADS` say
otherwise, embedded unless `--redis-url`).

`wrk` (bench/wrk/toolcalls.lua) then drives the same mix as bench/peers.py, POST and GET tool
calls at each of `--connections`, over the hot runs ("hot": the same connections stay open) and
over the spread runs ("spread": cold opens, the connection pool churning), alternating phases
round by round; medians of `--rounds`. Prints one JSON object:

- `register_s`, `register_ms_per_tenant`: the bulk registration;
- `{hot,spread}_{post,get}_c{N}_{rps,p50_ms,p99_ms}`, `ratio_spread_to_hot_{post,get}_c{N}_p99`;
- `{hot,spread}_worker_rss_mib`: the largest gunicorn worker's RSS after that phase's rounds
  (largest sample), `ratio_spread_to_hot_worker_rss`;
- `fds_start` (server up), `fds_before` (seeded and warmed up), `fds_after` (after every
  round), summed over the workers, and `rss_before_mib` / `rss_after_mib` likewise;
  `fds_per_phase` / `rss_mib_per_phase` after each phase of each round, each read 1 s after
  the load stopped (no request in flight); the first round fills the connection pools, so
  `fd_growth_after_first_round` and `rss_growth_after_first_round_pct` compare later rounds
  with it (use `--rounds` >= 2);
- `targets`: issue 12's (p99 and worker RSS within 1.5x, no descriptor or memory growth, the
  latter read as at most 5%).

Usage: .venv/bin/python bench/scale.py [--tenants 100000] [--spread-tenants 10000]
       [--seconds 15] [--rounds 3] [--connections 64]
Needs `wrk`; about 2 GB of disk in a temporary DATA_DIR for 100,000 tenants (`--data-dir`
to put it elsewhere).
"""

import sys
from pathlib import Path

# Run as a script, this folder would come first on sys.path; put the project root there instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from concurrent.futures import ThreadPoolExecutor  # noqa: E402

import requests  # noqa: E402

from bench.loadgen import (  # noqa: E402
    fd_count,
    gunicorn_workers,
    require_wrk,
    rss_mib,
    server_shape,
    write_targets,
    wrk,
)
from tests.processes import (  # noqa: E402
    free_port,
    manage,
    project_env,
    start_gunicorn,
    stop_gunicorn,
    wait_http,
)

CHUNK = 5000
PHASES = ("hot", "spread")
CASES = ("post", "get")


# --- Inside the Django process ------------------------------------------------------------------


def register_bulk(n: int) -> dict[str, float]:
    """Register `n` tenants as `tenant_create` would, in bulk; return the time it took."""
    from django.conf import settings
    from django.db import transaction

    from tenancy.ids import new_id
    from tenancy.paths import absolute, tenant_db_relpath
    from tenancy.scopes import Scope
    from tenancy.templates import ensure_template
    from tenants.models import Database, Tenant

    template, version = ensure_template(Scope.TENANT)
    image = template.read_bytes()  # checkpointed and closed: a byte copy is a database
    started = time.perf_counter()
    for start in range(0, n, CHUNK):
        ids = [new_id("ten") for _ in range(start, min(n, start + CHUNK))]
        for tenant_id in ids:
            path = absolute(tenant_db_relpath(tenant_id))
            path.parent.mkdir(parents=True)
            path.write_bytes(image)  # no fsync: benchmark data, rebuilt on every run
        with transaction.atomic(using="default"):
            databases = Database.objects.bulk_create(
                Database(
                    kind=Database.Kind.TENANT,
                    path=tenant_db_relpath(tenant_id),
                    schema_version=version,
                    home_node=settings.HOME_NODE,
                )
                for tenant_id in ids
            )
            Tenant.objects.bulk_create(
                Tenant(id=tenant_id, slug=f"scale-{start + i}", database=database)
                for i, (tenant_id, database) in enumerate(zip(ids, databases, strict=True))
            )
    elapsed = time.perf_counter() - started
    return {"register_s": elapsed, "register_ms_per_tenant": elapsed / max(n, 1) * 1000}


def provision_targets(hot: int, hot_runs: int, spread: int, seed: int) -> dict[str, object]:
    """Give `hot` tenants `hot_runs` runs each and `spread` random others one; return targets."""
    import random

    from runs.services import run_create
    from tenants.models import Tenant
    from tenants.services import api_key_create

    ids = list(Tenant.objects.order_by("slug").values_list("id", flat=True))
    chosen = random.Random(seed).sample(ids, hot + spread)
    started = time.perf_counter()
    targets: dict[str, list[list[str]]] = {"hot": [], "spread": []}
    for index, tenant in enumerate(Tenant.objects.in_bulk(chosen).values()):
        key = api_key_create(tenant=tenant)[1]
        phase, runs = ("hot", hot_runs) if index < hot else ("spread", 1)
        targets[phase] += [["127.0.0.1", key, run_create(tenant=tenant).id] for _ in range(runs)]
    return {**targets, "provision_s": time.perf_counter() - started}


# --- The driver ---------------------------------------------------------------------------------


def seed(base: str, targets: list[list[str]], calls: int) -> None:
    """Record `calls` tool calls in every run (so that GET finds seqs 1..calls), 8 at a time."""
    local = threading.local()
    body = {"name": "search", "args": {"q": "flights to LIS", "k": 5}}

    def one(target: list[str]) -> None:
        session = getattr(local, "session", None) or requests.Session()
        local.session = session
        _host, key, run = target
        for _ in range(calls):
            url = f"{base}/api/v1/runs/{run}/tool-calls"
            answer = session.post(
                url, json=body, headers={"Authorization": f"Bearer {key}"}, timeout=60
            )
            if answer.status_code != 201:
                raise SystemExit(f"seed {url}: {answer.status_code} {answer.text}")

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(one, targets))


SETTLE_S = 1.0


def workers_state(master: int) -> dict[str, object]:
    # Read once the load has stopped for a moment: the last requests have ended and given their
    # connections back to the pool, and the closed client sockets are gone; a sample taken while
    # a few were still in flight counted their descriptors as growth.
    time.sleep(SETTLE_S)
    pids = gunicorn_workers(master)
    return {
        "fds": sum(fd_count(pid) for pid in pids),
        "fds_per_worker": [fd_count(pid) for pid in pids],
        "rss_mib": sum(rss_mib(pid) for pid in pids),
        "max_worker_rss_mib": max((rss_mib(pid) for pid in pids), default=0.0),
    }


def fd_soft_limit(pid: int) -> int:
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            return int(line.split()[3])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tenants", type=int, default=100_000, help="registered in all")
    parser.add_argument("--hot-tenants", type=int, default=10)
    parser.add_argument("--hot-runs", type=int, default=10, help="runs per hot tenant")
    parser.add_argument("--spread-tenants", type=int, default=10_000, help="one run each")
    parser.add_argument("--seed-calls", type=int, default=1, help="tool calls per run for GET")
    parser.add_argument("--seconds", type=float, default=15, help="per measured round")
    parser.add_argument("--warmup", type=float, default=3, help="seconds, per phase and case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", default="64", help="comma-separated, e.g. 16,64")
    parser.add_argument("--redis-url", default="", help="run the server with Redis")
    parser.add_argument("--data-dir", type=Path, help="parent of the temporary DATA_DIR")
    parser.add_argument("--random-seed", type=int, default=12)
    args = parser.parse_args()
    require_wrk()
    spread = min(args.spread_tenants, args.tenants - args.hot_tenants)
    concurrency = [int(c) for c in args.connections.split(",")]

    out: dict[str, object] = {
        "bench": "scale",
        "registered_tenants": args.tenants,
        "hot_tenants": args.hot_tenants,
        "hot_runs": args.hot_tenants * args.hot_runs,
        "spread_tenants": spread,
        "spread_runs": spread,
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "server": f"gunicorn gthread {server_shape()} "
        + ("(Redis)" if args.redis_url else "(embedded)"),
    }
    rounds: dict[tuple[str, str, int], list[dict]] = {}
    worker_rss: dict[str, float] = {}
    samples: list[tuple[int, dict[str, object]]] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-", dir=args.data_dir) as tmp_name:
        tmp = Path(tmp_name)
        port = free_port()
        extra = {"REDIS_URL": args.redis_url} if args.redis_url else {}
        env = project_env(
            tmp / "data",
            PORT=str(port),
            ACCESS_LOG="",
            LOG_LEVEL="ERROR",
            TENANT_MAX_ACTIVE_RUNS=str(max(1000, args.hot_runs)),
            **extra,
        )
        manage(env, "migrate", "--no-input", "-v", "0")
        code = (
            "import json; from bench.scale import register_bulk, provision_targets; "
            f"r = register_bulk({args.tenants}); "
            f"t = provision_targets({args.hot_tenants}, {args.hot_runs}, {spread}, "
            f"{args.random_seed}); print(json.dumps({{**r, **t}}))"
        )
        made = json.loads(manage(env, "shell", "-c", code).stdout.strip().splitlines()[-1])
        out["register_s"] = round(made["register_s"], 1)
        out["register_ms_per_tenant"] = round(made["register_ms_per_tenant"], 3)
        out["provision_keys_and_runs_s"] = round(made["provision_s"], 1)
        files = {phase: write_targets(tmp / f"{phase}.targets", made[phase]) for phase in PHASES}

        proc = start_gunicorn(env, tmp / "gunicorn.log")
        base = f"http://127.0.0.1:{port}"
        try:
            wait_http(f"{base}/healthz", deadline_s=60)
            start = workers_state(proc.pid)
            seed(base, made["hot"] + made["spread"], args.seed_calls)

            def drive(phase: str, case: str, c: int, seconds: float) -> dict:
                return wrk(
                    base,
                    files[phase],
                    mode=case,
                    connections=c,
                    seconds=seconds,
                    prefix="/api/v1",
                    seqs=args.seed_calls,
                )

            for phase in PHASES:
                for case in CASES:
                    drive(phase, case, concurrency[0], args.warmup)
            before = workers_state(proc.pid)
            for r in range(args.rounds):
                for phase in PHASES if r % 2 == 0 else PHASES[::-1]:
                    for c in concurrency:
                        for case in CASES:
                            result = drive(phase, case, c, args.seconds)
                            rounds.setdefault((phase, case, c), []).append(result)
                    state = workers_state(proc.pid)
                    samples.append((r, state))
                    sample = float(state["max_worker_rss_mib"])  # type: ignore[arg-type]
                    worker_rss[phase] = max(worker_rss.get(phase, 0.0), sample)
            after = workers_state(proc.pid)
            fd_limit = fd_soft_limit(gunicorn_workers(proc.pid)[0])
        finally:
            stop_gunicorn(proc)

    for (phase, case, c), results in rounds.items():
        key = f"{phase}_{case}_c{c}"
        out[f"{key}_rps"] = round(statistics.median(r["rps"] for r in results), 1)
        out[f"{key}_p50_ms"] = round(statistics.median(r["p50_ms"] for r in results), 2)
        out[f"{key}_p99_ms"] = round(statistics.median(r["p99_ms"] for r in results), 2)
    targets: dict[str, bool] = {}
    for case in CASES:
        for c in concurrency:
            ratio = out[f"spread_{case}_c{c}_p99_ms"] / out[f"hot_{case}_c{c}_p99_ms"]  # type: ignore[operator]
            out[f"ratio_spread_to_hot_{case}_c{c}_p99"] = round(ratio, 3)
            targets[f"{case}_c{c}_p99_within_1_5x"] = ratio <= 1.5
    for phase in PHASES:
        out[f"{phase}_worker_rss_mib"] = round(worker_rss[phase], 1)
    rss_ratio = worker_rss["spread"] / worker_rss["hot"]
    out["ratio_spread_to_hot_worker_rss"] = round(rss_ratio, 3)
    targets["worker_rss_within_1_5x"] = rss_ratio <= 1.5
    for name, state in (("start", start), ("before", before), ("after", after)):
        out[f"fds_{name}"] = state["fds"]
        out[f"fds_{name}_per_worker"] = state["fds_per_worker"]
        out[f"rss_{name}_mib"] = round(state["rss_mib"], 1)  # type: ignore[call-overload]
    out["fd_soft_limit_per_worker"] = fd_limit
    # The first round fills the connection pools: growth is measured after it.
    first = [state for r, state in samples if r == 0]
    later = [state for r, state in samples if r > 0] or first
    fd_growth = max(int(s["fds"]) for s in later) - max(int(s["fds"]) for s in first)  # type: ignore[call-overload]
    first_rss = max(float(s["rss_mib"]) for s in first)  # type: ignore[arg-type]
    rss_growth = max(float(s["rss_mib"]) for s in later) / first_rss - 1  # type: ignore[arg-type]
    out["fd_growth_after_first_round"] = fd_growth
    out["rss_growth_after_first_round_pct"] = round(rss_growth * 100, 1)
    out["fds_per_phase"] = [s["fds"] for _, s in samples]
    out["rss_mib_per_phase"] = [round(float(s["rss_mib"]), 1) for _, s in samples]  # type: ignore[arg-type]
    targets["no_descriptor_growth"] = fd_growth <= 0
    targets["no_memory_growth"] = rss_growth <= 0.05
    out["targets"] = targets
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
