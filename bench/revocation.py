"""What the revocation check costs a request (decision 0025).

Prints one JSON object:
  check_fast_path_ns          `revocation_check()` between reads: a clock read and a compare
  generation_read_us_embedded one read of the generation from the control plane (SQLite)
  generation_read_us_redis    one read from Redis (only with --redis-url or REDIS_URL)
  key_lookup_memo_hit_us      `tenant_for_api_key` on a memoised key, check included
  key_lookup_memo_hit_us_no_check  the same with the check skipped (the baseline)
  amortised_us_per_request    fast path + one read per REVOCATION_CHECK_SECONDS spread over
                              `--rps` requests per second and process, per source

Usage: .venv/bin/python bench/revocation.py [--redis-url redis://127.0.0.1:6379/11] [--rps 200]
Runs in a temporary DATA_DIR with a SQLite control plane.
"""

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

import argparse  # noqa: E402
import json  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from collections.abc import Callable  # noqa: E402


def per_call_ns(fn: Callable[[], object], n: int, rounds: int = 5) -> float:
    """Return the median over `rounds` of the mean time per call of `fn`, in nanoseconds."""
    samples = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(n):
            fn()
        samples.append((time.perf_counter_ns() - started) / n)
    return statistics.median(samples)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--redis-url", default=os.environ.get("REDIS_URL", ""))
    parser.add_argument("--rps", type=float, default=200.0, help="requests/s per process")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="bench-revocation-"))
    os.environ.update(
        DATA_DIR=str(data_dir),
        CONTROL_DATABASE_URL=f"sqlite:///{data_dir / 'control.sqlite3'}",
        DJANGO_SETTINGS_MODULE="project.settings",
        LOG_LEVEL="WARNING",
    )
    os.environ.pop("REDIS_URL", None)
    import django

    django.setup()
    from django.conf import settings
    from django.core.management import call_command

    from tenants import revocation
    from tenants.services import api_key_create, tenant_create, tenant_for_api_key

    call_command("migrate", "--no-input", verbosity=0)
    _, raw = api_key_create(tenant=tenant_create(slug="bench"))
    revocation.revocation_bump()  # the generation row exists, as after a first revocation
    settings.API_LOOKUP_CACHE_SECONDS = 3600

    result: dict[str, object] = {"bench": "revocation"}
    interval = float(settings.REVOCATION_CHECK_SECONDS)
    result["revocation_check_seconds"] = interval
    result["rps_per_process"] = args.rps

    settings.REVOCATION_CHECK_SECONDS = 3600  # measure the path between reads
    revocation.revocation_check()
    result["check_fast_path_ns"] = round(per_call_ns(revocation.revocation_check, 200_000), 1)

    tenant_for_api_key(raw)
    result["key_lookup_memo_hit_us"] = round(
        per_call_ns(lambda: tenant_for_api_key(raw), 50_000) / 1000, 2
    )
    check = revocation.revocation_check
    revocation.revocation_check = lambda: None  # type: ignore[assignment]
    import tenants.services as services

    services.revocation_check = lambda: None  # type: ignore[assignment]
    result["key_lookup_memo_hit_us_no_check"] = round(
        per_call_ns(lambda: tenant_for_api_key(raw), 50_000) / 1000, 2
    )
    services.revocation_check = check
    revocation.revocation_check = check

    sources = {"embedded": ""}
    if args.redis_url:
        sources["redis"] = args.redis_url
    amortised = {}
    for name, url in sources.items():
        settings.REDIS_URL = url
        read_us = per_call_ns(revocation.generation_read, 2_000) / 1000
        result[f"generation_read_us_{name}"] = round(read_us, 1)
        # One read per interval, shared by the requests of that interval.
        spread = read_us / max(1.0, interval * args.rps)
        amortised[name] = round(result["check_fast_path_ns"] / 1000 + spread, 3)  # type: ignore[operator]
    result["amortised_us_per_request"] = amortised
    result["reads_per_second_per_process"] = round(1 / interval, 2) if interval else None
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
