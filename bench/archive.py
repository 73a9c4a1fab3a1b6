"""Archive and restore of one run of ~50 MB, beside a plain copy of the same bytes.

A run database is filled with events (through the service, audit on) to `--mb` MB, completed,
then archived to filesystem storage (snapshot under the write lock, SHA-256, move into the
storage: `audit.archive.run_archive`) and restored (`tenancy.restored.restored_copy`: fetch,
hash, place). The plain copy is `shutil.copyfile` of the same file, in the same sitting.
Prints JSON: `archive_mb_per_s`, `restore_mb_per_s`, `copy_mb_per_s` and their ratios.

Usage: .venv/bin/python bench/archive.py [--mb 50] [--rounds 3]
"""

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="bench-archive-"))
    os.environ.update(
        DATA_DIR=str(tmp / "data"),
        CONTROL_DATABASE_URL=f"sqlite:///{tmp / 'control.sqlite3'}",
        DJANGO_SETTINGS_MODULE="project.settings",
        LOG_LEVEL="ERROR",
        ARCHIVE_ON_COMPLETE="0",
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.core.management import call_command

    call_command("migrate", "--no-input", "-v", "0")
    from audit.archive import run_archive
    from runs.models import Run
    from runs.services import events_append, run_complete, run_create
    from tenancy import connections
    from tenancy.paths import absolute
    from tenancy.restored import restored_copy
    from tenants.services import tenant_create

    tenant = tenant_create(slug="bench")
    payload = {"note": "x" * 900, "tokens": 42}
    results: dict[str, list[float]] = {"archive": [], "restore": [], "copy": []}
    size_mb = 0.0
    try:
        for _ in range(args.rounds):
            run = run_create(tenant=tenant)
            path = absolute(run.database.path)
            while path.stat().st_size < args.mb * 1e6:
                events_append(run=run, events=[("step", payload)] * 1000)
            run = run_complete(run=run, status="succeeded")
            size_mb = path.stat().st_size / 1e6
            started = time.perf_counter()
            shutil.copyfile(path, tmp / "copy.sqlite3")
            results["copy"].append(size_mb / (time.perf_counter() - started))
            (tmp / "copy.sqlite3").unlink()
            started = time.perf_counter()
            done = run_archive(run_id=run.id)
            results["archive"].append(done.size / 1e6 / (time.perf_counter() - started))
            archived = Run.objects.get(pk=run.id)
            started = time.perf_counter()
            restored = restored_copy(key=archived.archive_key, sha256=archived.archive_sha256)
            results["restore"].append(done.size / 1e6 / (time.perf_counter() - started))
            restored.unlink()
            connections.close_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    best = {name: max(values) for name, values in results.items()}
    print(
        json.dumps(
            {
                "bench": "archive",
                "archive_run_mb": round(size_mb, 1),
                "archive_rounds": args.rounds,
                "archive_mb_per_s": round(best["archive"], 1),
                "restore_mb_per_s": round(best["restore"], 1),
                "copy_mb_per_s": round(best["copy"], 1),
                "ratio_archive_to_copy": round(best["archive"] / best["copy"], 3),
                "ratio_restore_to_copy": round(best["restore"] / best["copy"], 3),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
