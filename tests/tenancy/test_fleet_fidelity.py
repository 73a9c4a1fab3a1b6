"""Every effect of a migration reaches every database, rows included (issue 6).

Fleets are provisioned under stage v1 with hundreds of notes per database, then a later stage's
code runs `migrate_tenants` in real processes (stages are described in tests/fleetapp/settings.py).
"""

import sqlite3
from contextlib import closing

import pytest

from runs.invariants import CLOSED_RUN_TRIGGERS
from tests.fleetapp.provision import note_text
from tests.processes import manage
from tests.tenancy.fleetkit import (
    deploy,
    duplicate_ledger_rows,
    fleet_under_v1,
    ledger,
    query,
    triggers,
)

pytestmark = pytest.mark.processes

NOTES = 200
URGENT = len([i for i in range(NOTES) if note_text(i).startswith("!")])
TYPOS = len([i for i in range(NOTES) if note_text(i).startswith("fix-")])


def table_sql(path) -> str:
    return query(path, "SELECT sql FROM sqlite_master WHERE name = 'fleetapp_note'")[0][0]


def tenant_files(data_dir):
    return [data_dir / path for path, *_ in ledger(data_dir) if "/runs/" not in path]


def test_cte_update_list_form_sql_with_comments_and_user_version_reach_every_database(tmp_path):
    data_dir = tmp_path / "data"
    v4 = deploy(fleet_under_v1(data_dir, tenants=12, notes=NOTES), "v4")
    result = manage(v4, "migrate_tenants", "--parallel", "2")
    assert "12 migrated" in result.stdout
    assert "1 replayed-SQL groups, 0 executor" in result.stdout  # the fast path did it
    assert {state for _, _, state, _ in ledger(data_dir)} == {"ready"}
    for path in tenant_files(data_dir):
        assert query(path, "SELECT count(*) FROM fleetapp_note WHERE pinned = 1") == [(URGENT,)]
        urgent_pinned = "SELECT count(*) FROM fleetapp_note WHERE text LIKE '!%' AND pinned"
        assert query(path, urgent_pinned) == [(URGENT,)]
        assert query(path, "SELECT count(*) FROM fleetapp_note WHERE text LIKE 'fix-%'") == [(0,)]
        assert query(path, "SELECT count(*) FROM fleetapp_note WHERE text LIKE 'fixed-%'") == [
            (TYPOS,)
        ]
        assert query(path, "SELECT count(*) FROM fleetapp_note") == [(NOTES + 1,)]
        assert query(path, "PRAGMA user_version") == [(7,)]
        assert "fleetapp_note_not_empty" in triggers(path)
        assert duplicate_ledger_rows(path) == []


def test_table_rebuild_keeps_every_row_and_every_trigger_in_tenant_and_run_databases(tmp_path):
    data_dir = tmp_path / "data"
    v1 = fleet_under_v1(data_dir, tenants=6, notes=NOTES, runs=2, calls=100)
    files = [data_dir / path for path, *_ in ledger(data_dir)]
    runs = [f for f in files if "/runs/" in str(f)]
    assert len(runs) == 12
    before_notes = {
        f: query(f, "SELECT id, text FROM fleetapp_note") for f in tenant_files(data_dir)
    }
    before_calls = {f: query(f, "SELECT seq, name, args FROM runs_toolcall") for f in runs}
    before_triggers = {f: triggers(f) for f in runs}
    assert all(set(CLOSED_RUN_TRIGGERS) <= set(t) for t in before_triggers.values())

    v5 = deploy(v1, "v5")
    result = manage(v5, "migrate_tenants", "--parallel", "2")
    assert "18 migrated" in result.stdout and "0 quarantined" in result.stdout
    for path, rows in before_notes.items():
        expected = {i: ("fixed-" + t[4:] if t.startswith("fix-") else t) for i, t in rows}
        after = dict(query(path, "SELECT id, text FROM fleetapp_note"))
        marker = [i for i, t in after.items() if t == "added-by-migration"]
        assert len(marker) == 1
        del after[marker[0]]
        assert after == expected  # every row kept, by id, with the SQL's changes
        assert "varchar(500)" in table_sql(path)  # rebuilt
        assert "fleetapp_note_not_empty" in triggers(path)
        with closing(sqlite3.connect(path)) as conn, pytest.raises(sqlite3.IntegrityError):
            conn.execute("INSERT INTO fleetapp_note (text, pinned) VALUES ('', 0)")
    for path in runs:
        assert triggers(path) == before_triggers[path]
        assert query(path, "SELECT seq, name, args FROM runs_toolcall") == before_calls[path]


def test_run_python_data_migration_reaches_every_database(tmp_path):
    data_dir = tmp_path / "data"
    v3 = deploy(fleet_under_v1(data_dir, tenants=8, notes=NOTES), "v3")
    result = manage(v3, "migrate_tenants", "--parallel", "2")
    assert "8 migrated" in result.stdout
    assert "not expressible as SQL: ['fleetapp.0003_pin_urgent']" in result.stdout
    for path in tenant_files(data_dir):
        pinned = query(path, "SELECT text FROM fleetapp_note WHERE pinned = 1")
        assert len(pinned) == URGENT and all(text.startswith("!") for (text,) in pinned)
        assert duplicate_ledger_rows(path) == []


def test_unique_index_over_duplicates_quarantines_the_first_sample_and_migrates_the_other_49(
    tmp_path,
):
    data_dir = tmp_path / "data"
    v1 = fleet_under_v1(data_dir, tenants=50, notes=NOTES, duplicate_in_first=True)
    v6 = deploy(v1, "v6")
    old_version = ledger(data_dir)[0][1]
    result = manage(v6, "migrate_tenants", "--parallel", "2", check=False)
    assert result.returncode == 1, result.stderr
    assert "49 migrated" in result.stdout and "1 quarantined" in result.stdout
    assert "1 replayed-SQL groups" in result.stdout  # the next database became the sample
    rows = ledger(data_dir)
    first_path, first_version, first_state, first_error = rows[0]
    assert (first_version, first_state) == (old_version, "quarantined")
    assert "IntegrityError" in first_error and "UNIQUE" in first_error
    assert f"QUARANTINED {first_path}: as sample: django.db.utils.IntegrityError" in (result.stderr)
    assert "note_text_uniq" not in table_sql(data_dir / first_path)
    for path, version, state, _ in rows[1:]:
        assert (version, state) == (rows[1][1], "ready") and version != old_version
        assert "note_text_uniq" in table_sql(data_dir / path)
        assert query(data_dir / path, "SELECT count(*) FROM fleetapp_note") == [(NOTES,)]
