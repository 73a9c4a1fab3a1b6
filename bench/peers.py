"""This project against its peers: django-tenants and one shared PostgreSQL, tool calls via wrk.

Three servers on loopback, the same data in each (10 tenants x 10 runs, `--seed-calls` tool
calls per run), the same two endpoints:

- `ours`: this project as `make run` starts it (gunicorn gthread, 2 processes x 8 threads unless
  `WEB_CONCURRENCY` / `WEB_THREADS` say otherwise, embedded mode unless `--redis-url`), access
  log off;
- `dt`: django-tenants (`bench/peers/dt`): a schema per tenant, `TenantMainMiddleware` routing
  by Host (`t<i>.peers.test`, sent by wrk), gunicorn sync x `--peer-workers`, persistent
  connections;
- `pgshared` (`bench/peers/pgshared`): one PostgreSQL database, one `tool_call` table with a
  unique (`run_id`, `seq`), the seq taken under the run's row lock; same gunicorn.

`wrk` (bench/wrk/toolcalls.lua: a random run of a random tenant per request) drives
`POST /runs/{id}/tool-calls` and `GET /runs/{id}/tool-calls/{seq}` at c=16 and c=64; each case
has one warm-up round per system, then `--rounds` rounds whose system order rotates, and the
median round is reported. Prints one JSON object:

- `{ours,dt,pgshared}_{post,get}_c{16,64}_{rps,p50_ms,p99_ms}` (medians) and `..._rps_rounds`;
- `ratio_{post,get}_c{16,64}_{rps,p99}_vs_{dt,pgshared}`: ours / the peer's;
- `{system}_worker_rss_mib` (mean of the gunicorn workers), `_server_rss_mib` (master +
  workers), `_db_rss_mib` (the PostgreSQL backends connected to the peer's database, from
  pg_stat_activity; 0 for ours, whose SQLite lives in its workers), `_total_rss_mib`; each the
  largest of the samples taken after every measured round;
- `targets`: the targets of issue 12, each true or false.

Usage: .venv/bin/python bench/peers.py [--seconds 15] [--rounds 3] [--update-readme]
       .venv/bin/python bench/peers.py --render out.json   (README table from saved JSON)
Needs `wrk`, PostgreSQL (`--pg`, default postgres://postgres@127.0.0.1:5432/postgres; the
databases bench_dt and bench_pgshared are created, and dropped at the end) and the `bench` extra
(`pip install -e ".[bench]"`; `make bench-peers` does all of it).
"""

import sys
from pathlib import Path

# Run as a script, this folder would come first on sys.path; put the project root there instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
from urllib.parse import urlsplit  # noqa: E402

import psycopg  # noqa: E402
import requests  # noqa: E402

from bench.loadgen import (  # noqa: E402
    gunicorn_workers,
    require_wrk,
    rss_mib,
    server_shape,
    write_targets,
    wrk,
)
from tests.processes import (  # noqa: E402
    PYTHON,
    free_port,
    manage,
    project_env,
    start_gunicorn,
    stop_gunicorn,
    wait_http,
)

SYSTEMS = ("ours", "dt", "pgshared")
PEERS = ("dt", "pgshared")
CASES = ("post", "get")
CONCURRENCY = (16, 64)
NAMES = {"ours": "agentdb", "dt": "django-tenants", "pgshared": "one shared PostgreSQL"}
README = ROOT / "README.md"
BEGIN, END = "<!-- peers:begin -->", "<!-- peers:end -->"

OURS_SETUP = """
import json
from runs.services import run_create
from tenants.services import api_key_create, tenant_create
out = []
for i in range({tenants}):
    tenant = tenant_create(slug=f"peer-{{i}}")
    key = api_key_create(tenant=tenant)[1]
    out += [["127.0.0.1", key, run_create(tenant=tenant).id] for _ in range({runs})]
print(json.dumps(out))
"""


class Server:
    """One system under test: its gunicorn, its targets, its database (peers)."""

    def __init__(self, name: str, tmp: Path, args: argparse.Namespace):
        self.name, self.port = name, free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.prefix = "/api/v1" if name == "ours" else ""
        self.pg_db = "" if name == "ours" else f"bench_{name}"
        log = tmp / f"{name}.log"
        if name == "ours":
            extra = {"REDIS_URL": args.redis_url} if args.redis_url else {}
            env = project_env(
                tmp / "ours", PORT=str(self.port), ACCESS_LOG="", LOG_LEVEL="ERROR", **extra
            )
            manage(env, "migrate", "--no-input", "-v", "0")
            setup = manage(
                env, "shell", "-c", OURS_SETUP.format(tenants=args.tenants, runs=args.runs)
            ).stdout
            self.proc = start_gunicorn(env, log)
        else:
            pg = urlsplit(args.pg)
            env = {
                **os.environ,
                "PYTHONPATH": str(ROOT),
                "DJANGO_SETTINGS_MODULE": f"bench.peers.{name}.settings",
                "PEER_DB_NAME": self.pg_db,
                "PEER_DB_HOST": pg.hostname or "127.0.0.1",
                "PEER_DB_PORT": str(pg.port or 5432),
                "PEER_DB_USER": pg.username or "postgres",
                "PEER_DB_PASSWORD": pg.password or "",
                "PEER_WORKERS": str(args.peer_workers),
                "PORT": str(self.port),
            }
            with psycopg.connect(args.pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')
                conn.execute(f'CREATE DATABASE "{self.pg_db}"')
            migrate = ["migrate_schemas", "--shared"] if name == "dt" else ["migrate"]
            self._run(env, "-m", "django", *migrate, "-v", "0")
            setup = self._run(
                env, "-m", "bench.peers.setup", name, str(args.tenants), str(args.runs)
            )
            with log.open("wb") as out:
                self.proc = subprocess.Popen(
                    [
                        str(Path(PYTHON).parent / "gunicorn"),
                        f"bench.peers.{name}.wsgi:application",
                        "-c",
                        str(ROOT / "bench" / "peers" / "gunicorn.conf.py"),
                    ],
                    env=env,
                    cwd=ROOT,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
        self.targets = json.loads(setup.strip().splitlines()[-1])
        self.targets_file = write_targets(tmp / f"{name}.targets", self.targets)
        wait_http(f"{self.base}/healthz" if name == "ours" else f"{self.base}/")

    @staticmethod
    def _run(env: dict[str, str], *args: str) -> str:
        result = subprocess.run(
            [PYTHON, *args], env=env, cwd=ROOT, capture_output=True, text=True, timeout=600
        )
        if result.returncode != 0:
            raise SystemExit(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")
        return result.stdout

    def seed(self, calls: int) -> None:
        """Record `calls` tool calls in every run, so that GET finds seqs 1..calls."""
        session = requests.Session()
        body = {"name": "search", "args": {"q": "flights to LIS", "k": 5}}
        for host, key, run in self.targets:
            headers = {"Host": host, "Authorization": f"Bearer {key}"}
            for _ in range(calls):
                url = f"{self.base}{self.prefix}/runs/{run}/tool-calls"
                answer = session.post(url, json=body, headers=headers, timeout=30)
                if answer.status_code != 201:
                    raise SystemExit(f"{self.name}: seed {url}: {answer.status_code} {answer.text}")

    def memory(self, pg: str) -> dict[str, float]:
        """RSS now: gunicorn workers (mean), master + workers, PostgreSQL backends, total."""
        workers = gunicorn_workers(self.proc.pid)
        worker_rss = [rss_mib(pid) for pid in workers]
        server = rss_mib(self.proc.pid) + sum(worker_rss)
        db = 0.0
        if self.pg_db:
            with psycopg.connect(pg, autocommit=True) as conn:
                pids = conn.execute(
                    "SELECT pid FROM pg_stat_activity"
                    " WHERE datname = %s AND pid <> pg_backend_pid()",
                    (self.pg_db,),
                ).fetchall()
            db = sum(rss_mib(pid) for (pid,) in pids)
        return {
            "worker_rss_mib": statistics.fmean(worker_rss) if worker_rss else 0.0,
            "workers": len(workers),
            "server_rss_mib": server,
            "db_rss_mib": db,
            "total_rss_mib": server + db,
        }

    def drive(self, case: str, connections: int, seconds: float, seqs: int) -> dict:
        return wrk(
            self.base,
            self.targets_file,
            mode=case,
            connections=connections,
            seconds=seconds,
            prefix=self.prefix,
            seqs=seqs,
        )

    def stop(self, pg: str) -> None:
        stop_gunicorn(self.proc)
        if self.pg_db:
            with psycopg.connect(pg, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.pg_db}" WITH (FORCE)')


def summarise(out: dict, rounds: dict, memory: dict) -> None:
    """Fill `out` with medians, ratios, memory and the issue's targets."""
    for (system, case, c), results in rounds.items():
        key = f"{system}_{case}_c{c}"
        out[f"{key}_rps"] = round(statistics.median(r["rps"] for r in results), 1)
        out[f"{key}_p50_ms"] = round(statistics.median(r["p50_ms"] for r in results), 2)
        out[f"{key}_p99_ms"] = round(statistics.median(r["p99_ms"] for r in results), 2)
        out[f"{key}_rps_rounds"] = [round(r["rps"], 1) for r in results]
    for system in SYSTEMS:
        for field, value in memory[system].items():
            out[f"{system}_{field}"] = round(value, 1) if isinstance(value, float) else value
    for case in CASES:
        for c in CONCURRENCY:
            for peer in PEERS:
                ours, theirs = f"ours_{case}_c{c}", f"{peer}_{case}_c{c}"
                out[f"ratio_{case}_c{c}_rps_vs_{peer}"] = round(
                    out[f"{ours}_rps"] / out[f"{theirs}_rps"], 3
                )
                out[f"ratio_{case}_c{c}_p99_vs_{peer}"] = round(
                    out[f"{ours}_p99_ms"] / out[f"{theirs}_p99_ms"], 3
                )
    for peer in PEERS:
        out[f"ratio_total_rss_vs_{peer}"] = round(
            out["ours_total_rss_mib"] / out[f"{peer}_total_rss_mib"], 3
        )
    targets = {
        "post_c64_rps_ge_4x_dt": out["ratio_post_c64_rps_vs_dt"] >= 4,
        "post_c64_rps_ge_3x_pgshared": out["ratio_post_c64_rps_vs_pgshared"] >= 3,
        "get_c64_rps_ge_3x_dt": out["ratio_get_c64_rps_vs_dt"] >= 3,
        "total_rss_below_dt": out["ours_total_rss_mib"] < out["dt_total_rss_mib"],
    }
    for case in CASES:
        for c in CONCURRENCY:
            best = min(out[f"{peer}_{case}_c{c}_p99_ms"] for peer in PEERS)
            targets[f"{case}_c{c}_p99_le_best_peer"] = out[f"ours_{case}_c{c}_p99_ms"] <= best
    out["targets"] = targets


def readme_table(out: dict) -> str:
    """Return the README's comparison table (between the markers) for a result of this script."""
    header = [
        f"Measured by `make bench-peers`: {out['seconds_per_round']:g} s rounds, median of "
        f"{out['rounds']}, {out['tenants']} tenants x {out['runs_per_tenant']} runs, "
        f"`wrk` on the same machine; {out['servers']}.",
        "",
        "| case | agentdb req/s (p99) | django-tenants req/s (p99) | "
        "one shared PostgreSQL req/s (p99) | agentdb / django-tenants | agentdb / shared PG |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    rows = []
    for case in CASES:
        for c in CONCURRENCY:
            cells = [f"{case.upper()} tool call, c={c}"]
            for system in SYSTEMS:
                key = f"{system}_{case}_c{c}"
                cells.append(f"{out[f'{key}_rps']:,.0f} ({out[f'{key}_p99_ms']:.0f} ms)")
            cells += [f"{out[f'ratio_{case}_c{c}_rps_vs_{peer}']:.2f}x" for peer in PEERS]
            rows.append("| " + " | ".join(cells) + " |")
    for label, field in (
        ("RSS per gunicorn worker, MiB", "worker_rss_mib"),
        ("total RSS, MiB (gunicorn + PostgreSQL backends)", "total_rss_mib"),
    ):
        values = [out[f"{system}_{field}"] for system in SYSTEMS]
        cells = [label, *(f"{value:,.0f}" for value in values)]
        cells += [f"{values[0] / value:.2f}x" for value in values[1:]]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join([*header, *rows])


def update_readme(out: dict) -> None:
    text = README.read_text()
    start, end = text.index(BEGIN) + len(BEGIN), text.index(END)
    README.write_text(text[:start] + "\n" + readme_table(out) + "\n" + text[end:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=15, help="per measured round")
    parser.add_argument("--warmup", type=float, default=3, help="seconds, per system and case")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--tenants", type=int, default=10)
    parser.add_argument("--runs", type=int, default=10, help="per tenant")
    parser.add_argument("--seed-calls", type=int, default=5, help="tool calls per run for GET")
    parser.add_argument("--peer-workers", type=int, default=4, help="gunicorn sync workers")
    parser.add_argument("--pg", default="postgres://postgres@127.0.0.1:5432/postgres")
    parser.add_argument("--redis-url", default="", help="run ours with Redis (default embedded)")
    parser.add_argument("--update-readme", action="store_true", help="rewrite README's table")
    parser.add_argument("--render", type=Path, help="only rewrite README's table from this JSON")
    args = parser.parse_args()
    if args.render:
        update_readme(json.loads(args.render.read_text()))
        return
    require_wrk()
    try:
        psycopg.connect(args.pg, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        raise SystemExit(f"PostgreSQL at {args.pg} is unreachable ({exc}); start it.") from None

    out: dict = {
        "bench": "peers",
        "seconds_per_round": args.seconds,
        "rounds": args.rounds,
        "tenants": args.tenants,
        "runs_per_tenant": args.runs,
        "servers": (
            f"agentdb gunicorn gthread {server_shape()} "
            + ("(Redis)" if args.redis_url else "(embedded)")
            + f", the peers gunicorn sync x {args.peer_workers} on PostgreSQL "
            + psycopg.connect(args.pg).execute("SHOW server_version").fetchone()[0]
        ),
    }
    rounds: dict[tuple[str, str, int], list[dict]] = {}
    memory: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-peers-") as tmp_name:
        tmp = Path(tmp_name)
        servers: dict[str, Server] = {}
        try:
            for name in SYSTEMS:
                servers[name] = Server(name, tmp, args)
                servers[name].seed(args.seed_calls)
            for c in CONCURRENCY:
                for case in CASES:
                    for server in servers.values():
                        server.drive(case, c, args.warmup, args.seed_calls)
                    for r in range(args.rounds):
                        # Rotate the order so that no system always runs first or last.
                        order = SYSTEMS[r % 3 :] + SYSTEMS[: r % 3]
                        for name in order:
                            result = servers[name].drive(case, c, args.seconds, args.seed_calls)
                            rounds.setdefault((name, case, c), []).append(result)
                            sample = servers[name].memory(args.pg)
                            if sample["total_rss_mib"] > memory.get(name, {}).get(
                                "total_rss_mib", -1.0
                            ):
                                memory[name] = sample
        finally:
            for server in servers.values():
                server.stop(args.pg)
    summarise(out, rounds, memory)
    print(json.dumps(out, indent=2))
    if args.update_readme:
        update_readme(out)


if __name__ == "__main__":
    main()
