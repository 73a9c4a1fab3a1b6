"""The audit trail's cost on write throughput, measured in-process (no HTTP noise).

`bench/hot_run.py` reads the cost through gunicorn and wrk (`batch_events_per_s` beside
`batch_events_per_s_no_audit`), where HTTP and scheduling on two cores move results by more
than the 10% the target allows. Here the same batches go through the run's service and single
writer (`runs.services.events_append`: validation, lease, group commit, fsync at the run
database's `RUN_SQLITE_SYNCHRONOUS`) in one process, with `AUDIT_RUNS` on and off, alternating
rounds (on/off, then off/on, ...) on two runs of the same size, and the medians compared.

Prints JSON: `audit_events_per_s`, `no_audit_events_per_s`, `ratio_audit_to_no_audit` (of the
medians; target >= 0.9: the trail costs at most 10%), `ratio_audit_to_no_audit_paired` (the
median of each round's on/off ratio: steadier when the machine's speed drifts), the same per
second of this process's CPU time (`ratio_audit_to_no_audit_cpu`), the ratio of all rounds
together (`ratio_audit_to_no_audit_overall`: total events over total time, every WAL
checkpoint counted) and the rounds.

Usage: .venv/bin/python bench/audit_cost.py [--batch 1000] [--batches 36] [--rounds 9]
"""

import argparse
import json
import shutil
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:] = [str(ROOT)] + [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]

from bench.inprocess import setup_embedded  # noqa: E402

# The event hot_run.py sends (its `batch` case), so both benches write the same rows.
PAYLOAD = {"step": 1, "tokens": 42, "note": "thinking about the next tool"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=1000, help="events per batch")
    parser.add_argument("--batches", type=int, default=36, help="batches per round")
    parser.add_argument("--rounds", type=int, default=9, help="rounds per mode (alternating)")
    args = parser.parse_args()
    tmp = setup_embedded("bench-audit-")
    from django.conf import settings
    from django.test import override_settings

    from runs.services import events_append, run_create
    from tenants.services import tenant_create

    tenant = tenant_create(slug="bench")
    runs = {True: run_create(tenant=tenant), False: run_create(tenant=tenant)}
    batch = [("step", PAYLOAD)] * args.batch

    events = args.batch * args.batches

    def round_of(audit: bool) -> tuple[float, float]:
        """Events per second of wall time, and per second of this process's CPU time."""
        with override_settings(AUDIT_RUNS=audit):
            started, cpu = time.perf_counter(), time.process_time()
            for _ in range(args.batches):
                events_append(run=runs[audit], events=batch)
            return events / (time.perf_counter() - started), events / (time.process_time() - cpu)

    rates: dict[bool, list[float]] = {True: [], False: []}
    cpu_rates: dict[bool, list[float]] = {True: [], False: []}
    try:
        for audit in (True, False):  # warm-up: connections, templates, statement caches
            round_of(audit)
        for number in range(args.rounds):
            order = (True, False) if number % 2 == 0 else (False, True)
            for audit in order:
                wall, cpu = round_of(audit)
                rates[audit].append(wall)
                cpu_rates[audit].append(cpu)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    audit_rate = statistics.median(rates[True])
    no_audit_rate = statistics.median(rates[False])
    paired = statistics.median(a / b for a, b in zip(rates[True], rates[False], strict=True))
    cpu_ratio = statistics.median(cpu_rates[True]) / statistics.median(cpu_rates[False])
    # All rounds together: each mode's events over its total time, checkpoints included (the
    # audited run fills its WAL twice as fast, so it checkpoints about twice as often).
    overall = statistics.harmonic_mean(rates[True]) / statistics.harmonic_mean(rates[False])
    print(
        json.dumps(
            {
                "bench": "audit_cost",
                "audit_cost_method": "in-process events_append through the run's writer, "
                f"alternating rounds, medians; run databases synchronous="
                f"{settings.RUN_SQLITE_SYNCHRONOUS}",
                "audit_cost_events_per_batch": args.batch,
                "audit_cost_batches_per_round": args.batches,
                "audit_cost_rounds": args.rounds,
                "audit_events_per_s": round(audit_rate),
                "no_audit_events_per_s": round(no_audit_rate),
                "ratio_audit_to_no_audit": round(audit_rate / no_audit_rate, 3),
                "ratio_audit_to_no_audit_paired": round(paired, 3),
                "ratio_audit_to_no_audit_overall": round(overall, 3),
                "audit_events_per_cpu_s": round(statistics.median(cpu_rates[True])),
                "no_audit_events_per_cpu_s": round(statistics.median(cpu_rates[False])),
                "ratio_audit_to_no_audit_cpu": round(cpu_ratio, 3),
                "audit_events_per_s_rounds": [round(r) for r in rates[True]],
                "no_audit_events_per_s_rounds": [round(r) for r in rates[False]],
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
