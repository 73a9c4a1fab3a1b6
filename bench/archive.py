"""Archive and restore of one run of ~50 MB, beside plain copies of the same bytes.

A run database is filled with events (through the service, audit on) to `--mb` MB, completed,
then archived to filesystem storage (`audit.archive.run_archive`: snapshot under the write
lock, hashed and written straight into the storage folder, fsync, rename, control-plane
record, live file removed) and restored (`tenancy.restored.restored_copy`: copy out of the
storage, hashed and checked, renamed into DATA_DIR/restored).

References, in the same round and on the same disk, of the same file: `copy_mb_per_s` is
`shutil.copyfile` of the run's file (sendfile, no fsync: the issue's "plain copy"), and
`copy_fsync_mb_per_s` the same copy then fsynced (what any durable copy costs; an archive
must be durable before the live file goes). `archive_snapshot_mb_per_s` is the snapshot step
alone (copy + hash + fsync), the rest of `archive_mb_per_s` being the record, the tenant's
audit entry and the removal of the live file. Every file involved was just written: the page
cache is warm for all of them; and every timed step starts after `os.sync()`, with no dirty
pages anywhere, so no step pays for the write-back of another (filling the run leaves tens of
MB to write, and whichever step fsyncs first would otherwise wait for them). Each figure is the
median of `--rounds` rounds.

Prints JSON: `archive_mb_per_s`, `restore_mb_per_s`, `copy_mb_per_s`, ... and their ratios.

Usage: .venv/bin/python bench/archive.py [--mb 50] [--rounds 5]
"""

import argparse
import json
import os
import shutil
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from bench.inprocess import setup_embedded  # noqa: E402


def _copy(source: Path, target: Path, *, fsync: bool) -> float:
    """Seconds to copy `source` to `target` (fsynced or not); the copy is removed."""
    os.sync()
    started = time.perf_counter()
    shutil.copyfile(source, target)
    if fsync:
        fd = os.open(target, os.O_RDONLY)
        os.fsync(fd)
        os.close(fd)
    elapsed = time.perf_counter() - started
    target.unlink()
    return elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mb", type=float, default=50)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    tmp = setup_embedded("bench-archive-")
    from audit import archive
    from runs.models import Run
    from runs.services import events_append, run_complete, run_create
    from tenancy import connections
    from tenancy.paths import absolute
    from tenancy.restored import restored_copy
    from tenants.services import tenant_create

    snapshot_seconds: list[float] = []
    take_snapshot = archive.snapshot

    def timed_snapshot(*a: Any, **kw: Any) -> Any:
        started = time.perf_counter()
        try:
            return take_snapshot(*a, **kw)
        finally:
            snapshot_seconds.append(time.perf_counter() - started)

    archive.snapshot = timed_snapshot  # type: ignore[assignment]
    tenant = tenant_create(slug="bench")
    payload = {"note": "x" * 900, "tokens": 42}
    rates: dict[str, list[float]] = {
        "archive": [],
        "archive_snapshot": [],
        "restore": [],
        "copy": [],
        "copy_fsync": [],
    }
    size_mb = 0.0
    try:
        for _ in range(args.rounds):
            run = run_create(tenant=tenant)
            path = absolute(run.database.path)
            while path.stat().st_size < args.mb * 1e6:
                events_append(run=run, events=[("step", payload)] * 1000)
            run = run_complete(run=run, status="succeeded")
            size_mb = path.stat().st_size / 1e6
            rates["copy"].append(size_mb / _copy(path, tmp / "copy.sqlite3", fsync=False))
            rates["copy_fsync"].append(size_mb / _copy(path, tmp / "copy.sqlite3", fsync=True))
            os.sync()
            started = time.perf_counter()
            done = archive.run_archive(run_id=run.id)
            rates["archive"].append(done.size / 1e6 / (time.perf_counter() - started))
            rates["archive_snapshot"].append(done.size / 1e6 / snapshot_seconds[-1])
            archived = Run.objects.get(pk=run.id)
            os.sync()
            started = time.perf_counter()
            restored = restored_copy(key=archived.archive_key, sha256=archived.archive_sha256)
            rates["restore"].append(done.size / 1e6 / (time.perf_counter() - started))
            restored.unlink()
            connections.close_all()
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    mid = {name: statistics.median(values) for name, values in rates.items()}
    print(
        json.dumps(
            {
                "bench": "archive",
                "archive_run_mb": round(size_mb, 1),
                "archive_rounds": args.rounds,
                "archive_page_cache": "warm (every file read was just written)",
                "archive_mb_per_s": round(mid["archive"], 1),
                "archive_snapshot_mb_per_s": round(mid["archive_snapshot"], 1),
                "restore_mb_per_s": round(mid["restore"], 1),
                "copy_mb_per_s": round(mid["copy"], 1),
                "copy_fsync_mb_per_s": round(mid["copy_fsync"], 1),
                "ratio_archive_to_copy": round(mid["archive"] / mid["copy"], 3),
                "ratio_archive_to_copy_fsync": round(mid["archive"] / mid["copy_fsync"], 3),
                "ratio_restore_to_copy": round(mid["restore"] / mid["copy"], 3),
                "archive_rounds_mb_per_s": {
                    name: [round(v) for v in values] for name, values in rates.items()
                },
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
