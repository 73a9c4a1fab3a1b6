"""Operator commands that check names and delete tenants: real processes, real files."""

import sqlite3

import pytest

from tests.processes import manage, project_env

pytestmark = pytest.mark.processes


@pytest.fixture
def env(tmp_path):
    env = project_env(tmp_path / "data")
    manage(env, "migrate", "--no-input", "-v", "0")
    return env


def rows(env: dict[str, str], sql: str) -> list[tuple]:
    with sqlite3.connect(env["DATA_DIR"] + "/control.sqlite3") as conn:
        return conn.execute(sql).fetchall()


def test_too_long_names_fail_cleanly_and_store_nothing(env):
    tenant = manage(env, "create_tenant", "acme", "--name", "n" * 201, check=False)
    assert tenant.returncode == 1 and "Traceback" not in tenant.stderr
    assert "name" in tenant.stderr and "at most 200 characters" in tenant.stderr
    assert rows(env, "SELECT count(*) FROM tenants_tenant") == [(0,)]

    manage(env, "create_tenant", "acme", "--name", "n" * 200)
    key = manage(env, "create_api_key", "acme", "--name", "k" * 101, check=False)
    assert key.returncode == 1 and "Traceback" not in key.stderr
    assert "at most 100 characters" in key.stderr
    assert rows(env, "SELECT count(*) FROM tenants_apikey") == [(0,)]


def test_delete_tenant_needs_yes_then_removes_files_and_rows(env, tmp_path):
    for slug in ("acme", "globex"):
        manage(env, "create_tenant", slug)
        manage(env, "create_api_key", slug)
        manage(
            env,
            "tenant_command",
            slug,
            "--",
            "shell",
            "-c",
            "from runs.services import run_create, tool_call_record\n"
            "from tenancy.context import current_tenant\n"
            "for _ in range(3): tool_call_record(run=run_create(tenant=current_tenant()), "
            "name='x', args={})",
        )
    (acme_id,) = rows(env, "SELECT id FROM tenants_tenant WHERE slug = 'acme'")[0]
    directory = tmp_path / "data" / "tenants" / acme_id
    assert len(list(directory.rglob("*.sqlite3"))) == 4

    unconfirmed = manage(env, "delete_tenant", "acme", check=False)
    assert unconfirmed.returncode == 1 and "--yes" in unconfirmed.stderr
    assert directory.exists()
    unknown = manage(env, "delete_tenant", "nobody", "--yes", check=False)
    assert unknown.returncode == 1 and "No tenant 'nobody'" in unknown.stderr

    done = manage(env, "delete_tenant", "acme", "--yes")
    assert "Deleted tenant acme" in done.stdout and "4 database(s)" in done.stdout
    assert not directory.exists()
    assert rows(env, "SELECT slug FROM tenants_tenant") == [("globex",)]
    assert rows(env, f"SELECT count(*) FROM tenants_database WHERE path LIKE '%{acme_id}%'") == [
        (0,)
    ]
    assert rows(env, "SELECT count(*) FROM runs_run") == [(3,)]
    assert rows(env, "SELECT count(*) FROM tenants_apikey") == [(1,)]
