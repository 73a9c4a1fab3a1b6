"""Fixture fleets with rows in every database, provisioned in a stage-v1 process."""

import sqlite3
from contextlib import closing


def note_text(i: int) -> str:
    """Every 10th note is urgent ('!'), every 25th (offset 1) has the importer's typo ('fix-')."""
    if i % 10 == 0:
        return f"!urgent-{i}"
    if i % 25 == 1:
        return f"fix-{i}"
    return f"note-{i}"


def provision(
    *, tenants: int, notes: int, duplicate_in_first: bool = False, runs: int = 0, calls: int = 0
) -> None:
    """Create `tenants` tenants holding `notes` notes each, and `runs` runs with `calls` calls."""
    from runs.services import run_create, tool_call_record
    from tenancy.paths import absolute
    from tenants.services import tenant_create

    for t in range(tenants):
        tenant = tenant_create(slug=f"tenant-{t}")
        rows = [(note_text(i),) for i in range(notes)]
        if duplicate_in_first and t == 0:
            rows.append((note_text(2),))
        with closing(sqlite3.connect(absolute(tenant.database.path))) as conn, conn:
            conn.executemany("INSERT INTO fleetapp_note (text) VALUES (?)", rows)
        for _ in range(runs):
            run = run_create(tenant=tenant)
            for c in range(calls):
                tool_call_record(run=run, name="search", args={"q": f"query {c}"})
