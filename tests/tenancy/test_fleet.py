"""`migrate_tenants` across a fleet, as an operator deploys a new migration.

Stage v1 of `tests.fleetapp` has one migration; v2 adds a column and an index. Databases are
provisioned under v1, then v2's code runs `migrate_tenants` in real processes.
"""

import sqlite3
from pathlib import Path

import pytest

from tests.processes import manage, project_env

pytestmark = pytest.mark.processes

N_DATABASES = 50


def stage(env: dict[str, str], name: str) -> dict[str, str]:
    return {**env, "DJANGO_SETTINGS_MODULE": "tests.fleetapp.settings", "FLEET_STAGE": name}


def ledger(data_dir: Path) -> list[tuple[str, str, str]]:
    with sqlite3.connect(data_dir / "control.sqlite3") as conn:
        return conn.execute(
            "SELECT path, schema_version, state FROM tenants_database ORDER BY id"
        ).fetchall()


def note_columns(path: Path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {row[1] for row in conn.execute("PRAGMA table_info(fleetapp_note)")}


def deploy_v1_then_v2(data_dir: Path, provision: str) -> tuple[dict, dict]:
    """Provision with `provision` (Python) under v1, then migrate the control plane to v2."""
    env = project_env(data_dir)
    v1, v2 = stage(env, "v1"), stage(env, "v2")
    manage(v1, "migrate", "--no-input", "-v", "0")
    manage(v1, "shell", "-c", provision)
    manage(v2, "migrate", "--no-input", "-v", "0")
    return v1, v2


@pytest.fixture
def fleet(tmp_path):
    """N_DATABASES tenants provisioned under v1, control plane migrated to v2."""
    data_dir = tmp_path / "data"
    v1, v2 = deploy_v1_then_v2(
        data_dir,
        "from tenants.services import tenant_create\n"
        f"for i in range({N_DATABASES}): tenant_create(slug=f'tenant-{{i}}')",
    )
    return data_dir, v1, v2


def test_noop_run_reads_only_the_ledger(fleet):
    data_dir, v1, _ = fleet
    rows = ledger(data_dir)
    # Proof that no database is opened: even an unreadable file does not disturb a no-op run.
    (data_dir / rows[0][0]).write_bytes(b"not a database" * 100)
    result = manage(v1, "migrate_tenants")
    assert f"All {N_DATABASES} databases are at schema {rows[0][1]}" in result.stdout


def test_fleet_with_one_corrupt_database_migrates_the_rest_then_finishes_after_the_fix(fleet):
    data_dir, _, v2 = fleet
    before = ledger(data_dir)
    old_version = before[0][1]
    corrupt = data_dir / before[17][0]
    original = corrupt.read_bytes()
    corrupt.write_bytes(b"\x00garbage\x00" * 512)

    first = manage(v2, "migrate_tenants", "--parallel", "2", check=False)
    assert first.returncode != 0
    assert "1 quarantined" in first.stdout
    assert f"QUARANTINED {before[17][0]}" in first.stderr
    after = ledger(data_dir)
    new_version = after[0][1]
    assert new_version != old_version
    assert [state for _, _, state in after].count("quarantined") == 1
    assert after[17] == (before[17][0], old_version, "quarantined")
    migrated = [row for row in after if row[2] == "ready"]
    assert len(migrated) == N_DATABASES - 1
    assert {version for _, version, _ in migrated} == {new_version}
    for path, _, _ in migrated:
        assert "pinned" in note_columns(data_dir / path)

    corrupt.write_bytes(original)
    second = manage(v2, "migrate_tenants", "--parallel", "2")
    assert "1 migrated" in second.stdout
    final = ledger(data_dir)
    assert {(version, state) for _, version, state in final} == {(new_version, "ready")}
    assert "pinned" in note_columns(corrupt)
    for path, _, _ in final:
        with sqlite3.connect(data_dir / path) as conn:
            assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    assert "All 50 databases" in manage(v2, "migrate_tenants").stdout


def test_resumes_when_databases_are_ahead_of_the_ledger(fleet):
    """A run killed between a database's commit and the ledger write leaves exactly this."""
    data_dir, _, v2 = fleet
    old_version = ledger(data_dir)[0][1]
    manage(v2, "migrate_tenants", "--parallel", "1")
    with sqlite3.connect(data_dir / "control.sqlite3") as conn:
        conn.execute(
            "UPDATE tenants_database SET schema_version = ? WHERE id % 2 = 0", (old_version,)
        )
    resumed = manage(v2, "migrate_tenants", "--parallel", "2")
    assert f"0 migrated, {N_DATABASES // 2} already current" in resumed.stdout
    assert len({version for _, version, _ in ledger(data_dir)}) == 1


def test_one_tenant_only(fleet):
    data_dir, _, v2 = fleet
    result = manage(v2, "migrate_tenants", "--tenant", "tenant-3")
    assert "1 migrated" in result.stdout
    states = ledger(data_dir)
    assert len({version for _, version, _ in states}) == 2
    missing = manage(v2, "migrate_tenants", "--tenant", "nobody", check=False)
    assert missing.returncode != 0 and "No tenant 'nobody'" in missing.stderr


def test_new_tenants_after_the_deploy_start_at_the_new_version(fleet):
    data_dir, _, v2 = fleet
    manage(v2, "create_tenant", "late")
    rows = ledger(data_dir)
    assert "pinned" in note_columns(data_dir / rows[-1][0])
    assert rows[-1][1] != rows[0][1]


def test_data_migrations_fall_back_to_the_executor_per_database(fleet):
    data_dir, _, v2 = fleet
    manage(v2, "migrate_tenants")
    rows = ledger(data_dir)
    for path, _, _ in rows[:3]:
        with sqlite3.connect(data_dir / path) as conn:
            conn.execute(
                "INSERT INTO fleetapp_note (text, pinned) VALUES ('!urgent', 0), ('calm', 0)"
            )
    v3 = {**v2, "FLEET_STAGE": "v3"}
    manage(v3, "migrate", "--no-input", "-v", "0")
    result = manage(v3, "migrate_tenants", "--parallel", "2")
    assert f"{N_DATABASES} migrated" in result.stdout
    assert "0 replayed-SQL groups, 1 executor" in result.stdout
    assert "not expressible as SQL: ['fleetapp.0003_pin_urgent']" in result.stdout
    for path, _, _ in rows[:3]:
        with sqlite3.connect(data_dir / path) as conn:
            pinned = dict(conn.execute("SELECT text, pinned FROM fleetapp_note"))
        assert pinned == {"!urgent": 1, "calm": 0}
    # The control plane got no fleetapp table: the RunPython hint kept it to tenant databases.
    with sqlite3.connect(data_dir / "control.sqlite3") as conn:
        names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
    assert "fleetapp_note" not in names


def test_run_databases_are_migrated_beside_tenant_databases(tmp_path):
    data_dir = tmp_path / "data"
    _, v2 = deploy_v1_then_v2(
        data_dir,
        "from runs.services import run_create\n"
        "from tenants.services import tenant_create\n"
        "t = tenant_create(slug='with-runs')\n"
        "run_create(tenant=t); run_create(tenant=t)",
    )
    result = manage(v2, "migrate_tenants", "--tenant", "with-runs")
    assert "3 migrated" in result.stdout
    rows = ledger(data_dir)
    assert len(rows) == 3 and len({version for _, version, _ in rows}) == 1
    for path, _, _ in rows:
        with sqlite3.connect(data_dir / path) as conn:
            applied = {
                r[0]
                for r in conn.execute("SELECT name FROM django_migrations WHERE app='fleetapp'")
            }
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert applied == {"0001_initial", "0002_note_pinned"}
        assert ("fleetapp_note" in tables) == ("/runs/" not in path)  # tenant scope only
