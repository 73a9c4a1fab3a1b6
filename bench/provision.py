"""Provisioning, fleet migration and routing overhead, each beside its baseline in the same run.

Prints one JSON object:
  tenant_create_ms_p50/p99        template copy + control-plane rows (the product's path)
  tenant_create_via_migrate_ms_p50  the same schema built by running migrations (baseline)
  n_dbs, migrate_noop_s, migrate_apply_s   `manage.py migrate_tenants` wall time over n_dbs
                                  databases: nothing pending / one real pending migration each
                                  (a rebuild of `fleetapp_note`, which holds rows_per_db rows)
  migrate_executor_ms_per_db      Django's executor migrating one such database (same migration)
  migrate_apply_ms_per_db         migrate_apply_s / n_dbs; replay_speedup_x is the ratio
  routed_overhead_ratio           a memory GET through the router to warm tenant databases,
                                  divided by the same request against one static database

Usage: .venv/bin/python bench/provision.py [--n-dbs 10000] [--parallel 2]
Runs in a temporary DATA_DIR with `tests.fleetapp` (stage v1 -> v2) as the pending migration.
"""

import sys
from pathlib import Path

# Run as a script, this file's folder comes first on sys.path, where a module named like one
# of the standard library's would shadow it; put the project root there instead.
ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import shutil  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

from tests.processes import manage, project_env  # noqa: E402


def env_for(data_dir: Path, stage: str) -> dict[str, str]:
    return project_env(
        data_dir,
        DJANGO_SETTINGS_MODULE="bench.settings",
        FLEET_STAGE=stage,
        ALLOWED_HOSTS="testserver,localhost,127.0.0.1",
        BENCH_STATIC_DB=str(data_dir / "static.sqlite3"),
    )


def timed_manage(env: dict[str, str], *args: str) -> float:
    """Run a management command; return its wall time in seconds (process start included)."""
    started = time.perf_counter()
    manage(env, *args)
    return time.perf_counter() - started


ROWS_PER_DB = 100  # rows in the table the pending migration rebuilds, in every database
EXECUTOR_SAMPLES = 5


# --- Inside the Django process (stage v1) ---------------------------------------------------------


def _fill_notes(rows: int) -> None:
    """Give every tenant database `rows` notes (the table the v2 migration rebuilds)."""
    import sqlite3
    from contextlib import closing

    from tenancy.paths import absolute
    from tenants.models import Database

    values = [(f"note {i}",) for i in range(rows)]
    for relpath in Database.objects.filter(kind="tenant").values_list("path", flat=True):
        with closing(sqlite3.connect(absolute(relpath))) as conn:
            conn.execute("PRAGMA synchronous = NORMAL")
            with conn:
                conn.executemany("INSERT INTO fleetapp_note (text) VALUES (?)", values)


def phase_executor(copies: Path) -> dict[str, float]:
    """Time Django's executor migrating copies of v1 databases to v2, one at a time."""
    import django

    django.setup()
    from tenancy.scopes import Scope
    from tenancy.templates import migrate_file

    timings = []
    for path in sorted(copies.glob("*.sqlite3")):
        started = time.perf_counter()
        migrate_file(path, Scope.TENANT, create=False)
        timings.append((time.perf_counter() - started) * 1000)
    return {"migrate_executor_ms_per_db": round(statistics.median(timings), 3)}


def phase_create(n_dbs: int) -> dict[str, float]:
    import django

    django.setup()
    from django.db import transaction

    from tenancy.ids import new_id
    from tenancy.paths import absolute, tenant_db_relpath
    from tenancy.scopes import Scope
    from tenancy.templates import code_version, ensure_template, migrate_file
    from tenants.models import Database, Tenant
    from tenants.services import tenant_create

    ensure_template(Scope.TENANT)
    tenant_create(slug="warmup")

    template_ms = []
    for i in range(min(300, n_dbs)):
        started = time.perf_counter()
        tenant_create(slug=f"t-{i}")
        template_ms.append((time.perf_counter() - started) * 1000)

    # Baseline: the same database built by Django's migration executor, same registry rows.
    migrate_ms = []
    for i in range(20):
        started = time.perf_counter()
        tenant_id = new_id("ten")
        relpath = tenant_db_relpath(tenant_id)
        absolute(relpath).parent.mkdir(parents=True)
        migrate_file(absolute(relpath), Scope.TENANT)
        with transaction.atomic(using="default"):
            database = Database.objects.create(
                kind="tenant", path=relpath, schema_version=code_version()
            )
            Tenant.objects.create(id=tenant_id, slug=f"m-{i}", database=database)
        migrate_ms.append((time.perf_counter() - started) * 1000)

    started = time.perf_counter()
    made = Tenant.objects.count()
    for i in range(made, n_dbs):
        tenant_create(slug=f"bulk-{i}")
    bulk_s = time.perf_counter() - started
    _fill_notes(ROWS_PER_DB)
    return {
        "tenant_create_ms_p50": round(statistics.median(template_ms), 3),
        "tenant_create_ms_p99": round(statistics.quantiles(template_ms, n=100)[98], 3),
        "tenant_create_via_migrate_ms_p50": round(statistics.median(migrate_ms), 3),
        "template_speedup_x": round(
            statistics.median(migrate_ms) / statistics.median(template_ms), 1
        ),
        "bulk_provision_per_s": round(max(0, n_dbs - made) / bulk_s, 1) if n_dbs > made else None,
    }


def phase_routing(rounds: int = 7, per_round: int = 600) -> dict[str, float]:
    """Same GETs through the full middleware stack; only the database routing differs."""
    import sqlite3

    import django

    django.setup()
    from django.test import Client

    from bench import settings as bench_settings
    from bench.routers import StaticRouter
    from memory.services import memory_put
    from tenancy.context import tenant_context
    from tenancy.paths import absolute
    from tenants.models import Tenant
    from tenants.services import api_key_create

    tenants = list(Tenant.objects.select_related("database").order_by("created_at")[:50])
    keys = []
    for tenant in tenants:
        with tenant_context(tenant):
            for j in range(20):
                memory_put(key=f"k{j}", value={"tenant": tenant.slug, "j": j, "pad": "x" * 200})
        keys.append(api_key_create(tenant=tenant)[1])
    # The static database holds the same rows (a consistent copy of the first tenant's database).
    with (
        sqlite3.connect(absolute(tenants[0].database.path)) as source,
        sqlite3.connect(bench_settings.STATIC_DB) as target,
    ):
        source.backup(target)

    client = Client()
    requests = [(keys[i % len(keys)], f"/api/v1/memory/k{i % 20}") for i in range(per_round)]

    def run() -> float:
        started = time.perf_counter()
        for key, path in requests:
            response = client.get(path, headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.content
        return (time.perf_counter() - started) / len(requests)

    StaticRouter.enabled = False
    run()
    StaticRouter.enabled = True
    run()
    ratios, routed_us, static_us = [], [], []
    for _ in range(rounds):
        StaticRouter.enabled = False
        routed = run()
        StaticRouter.enabled = True
        static = run()
        ratios.append(routed / static)
        routed_us.append(routed * 1e6)
        static_us.append(static * 1e6)
    return {
        "routed_overhead_ratio": round(statistics.median(ratios), 3),
        "routed_request_us": round(statistics.median(routed_us), 1),
        "static_request_us": round(statistics.median(static_us), 1),
        "routed_tenants": len(tenants),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-dbs", type=int, default=10_000)
    parser.add_argument("--parallel", type=int, default=4 * (os.cpu_count() or 1))
    parser.add_argument(
        "--phase", choices=["create", "routing", "executor"], help=argparse.SUPPRESS
    )
    args = parser.parse_args()
    if args.phase == "create":
        print(json.dumps(phase_create(args.n_dbs)))
        return
    if args.phase == "routing":
        print(json.dumps(phase_routing()))
        return
    if args.phase == "executor":
        print(json.dumps(phase_executor(Path(os.environ["BENCH_EXECUTOR_COPIES"]))))
        return

    with tempfile.TemporaryDirectory(prefix="bench-provision-") as tmp:
        data_dir = Path(tmp)
        v1, v2 = env_for(data_dir, "v1"), env_for(data_dir, "v2")
        manage(v1, "migrate", "--no-input", "-v", "0")

        def child(phase: str, env: dict[str, str]) -> dict[str, float]:
            out = subprocess.run(
                [sys.executable, __file__, "--phase", phase, "--n-dbs", str(args.n_dbs)],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
            )
            if out.returncode != 0:
                raise SystemExit(f"phase {phase} failed:\n{out.stderr}")
            return json.loads(out.stdout.strip().splitlines()[-1])

        result: dict[str, object] = {"bench": "provision"}
        result.update(child("create", v1))
        result["n_dbs"] = args.n_dbs
        result["rows_per_db"] = ROWS_PER_DB
        result["migrate_noop_s"] = round(timed_manage(v1, "migrate_tenants"), 3)
        # The executor's baseline migrates copies of the same v1 databases (closed, checkpointed).
        copies = data_dir / "executor-copies"
        copies.mkdir()
        for i, source in enumerate(sorted((data_dir / "tenants").glob("*/tenant.sqlite3"))):
            if i == EXECUTOR_SAMPLES:
                break
            shutil.copyfile(source, copies / f"{i}.sqlite3")
        manage(v2, "migrate", "--no-input", "-v", "0")
        result["migrate_apply_s"] = round(
            timed_manage(v2, "migrate_tenants", "--parallel", str(args.parallel)), 3
        )
        result["migrate_apply_parallel"] = args.parallel
        result.update(child("executor", {**v2, "BENCH_EXECUTOR_COPIES": str(copies)}))
        apply_ms = result["migrate_apply_s"] * 1000 / args.n_dbs  # type: ignore[operator]
        result["migrate_apply_ms_per_db"] = round(apply_ms, 3)
        result["replay_speedup_x"] = round(
            result["migrate_executor_ms_per_db"] / apply_ms,  # type: ignore[operator]
            1,
        )
        result.update(child("routing", v2))
        print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
