"""Management commands as operators run them: real processes, real files."""

import json
import sqlite3

import pytest

from tests.processes import manage, project_env

pytestmark = pytest.mark.processes


def slug_for_key(env: dict[str, str], key: str) -> str:
    """Ask the project, in its own process, which tenant a raw API key opens."""
    code = (
        f"from tenants.services import tenant_for_api_key; print(tenant_for_api_key({key!r}).slug)"
    )
    return manage(env, "shell", "-c", code).stdout.strip().splitlines()[-1]


@pytest.fixture
def env(tmp_path):
    env = project_env(tmp_path / "data")
    manage(env, "migrate", "--no-input", "-v", "0")
    return env


def test_create_tenant_and_key_then_use_the_key(env, tmp_path):
    out = manage(env, "create_tenant", "acme", "--name", "Acme").stdout
    assert "Created tenant acme" in out
    key = manage(env, "create_api_key", "acme").stdout.strip().splitlines()[-1]
    assert key.startswith("adb_")
    assert slug_for_key(env, key) == "acme"
    with sqlite3.connect(tmp_path / "data" / "control.sqlite3") as conn:
        stored = conn.execute("SELECT key_hash FROM tenants_apikey").fetchall()
    assert len(stored) == 1 and key not in stored[0][0]  # only a hash is kept


def test_command_failures_are_clear_and_non_zero(env):
    bad = manage(env, "create_tenant", "Not_A_Slug", check=False)
    assert bad.returncode != 0 and "lowercase letters" in bad.stderr
    manage(env, "create_tenant", "acme")
    dup = manage(env, "create_tenant", "acme", check=False)
    assert dup.returncode != 0 and "already exists" in dup.stderr
    missing = manage(env, "create_api_key", "nobody", check=False)
    assert missing.returncode != 0 and "create_tenant nobody" in missing.stderr


def test_tenant_command_runs_against_that_tenants_database_only(env):
    for slug in ("acme", "globex"):
        manage(env, "create_tenant", slug)
        manage(
            env,
            "tenant_command",
            slug,
            "--",
            "shell",
            "-c",
            f"from memory.services import memory_put; memory_put(key='owner', value={slug!r})",
        )
    dumped = manage(env, "tenant_command", "acme", "--", "dumpdata", "memory.memoryentry").stdout
    rows = json.loads(dumped)
    assert [(r["pk"], r["fields"]["value"]) for r in rows] == [("owner", "acme")]
    listed = manage(
        env,
        "tenant_command",
        "globex",
        "--",
        "shell",
        "-c",
        "from memory.models import MemoryEntry\n"
        "print(list(MemoryEntry.objects.values_list('value', flat=True)))",
    ).stdout
    assert listed.strip().splitlines()[-1] == "['globex']"
    unknown = manage(env, "tenant_command", "nobody", "--", "check", check=False)
    assert unknown.returncode != 0 and "No tenant 'nobody'" in unknown.stderr


def test_bootstrap_demo_prints_a_working_key_once(env):
    first = manage(env, "bootstrap_demo").stdout
    key = next(line.strip() for line in first.splitlines() if line.strip().startswith("adb_"))
    assert "/api/docs" in first and "/healthz" in first
    second = manage(env, "bootstrap_demo").stdout
    assert key not in second and "exists" in second
    assert slug_for_key(env, key) == "demo"
