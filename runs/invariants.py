"""What every run database must hold, checked on each new run template (tenancy.templates)."""

import sqlite3

# The triggers that refuse writes to a closed run (runs/migrations/0002, decision 0009, and
# the tables added since). A
# migration that remakes one of these tables drops its triggers unless it recreates them.
CLOSED_RUN_TRIGGERS = (
    "runs_toolcall_insert_closed",
    "runs_toolcall_update_closed",
    "runs_event_insert_closed",
    "runs_statecheckpoint_insert_closed",
    "runs_artifact_insert_closed",  # runs/migrations/0006
    "audit_runentry_insert_closed",  # audit/migrations/0001
)


def closed_run_triggers_present(conn: sqlite3.Connection) -> list[str]:
    """Name the closed-run triggers missing from a run database (empty when all are there)."""
    have = {
        name for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'trigger'")
    }
    return [
        f"trigger {name} is missing: a migration remade its table without recreating it "
        "(see runs/migrations/0002_closed_triggers.py)"
        for name in CLOSED_RUN_TRIGGERS
        if name not in have
    ]
