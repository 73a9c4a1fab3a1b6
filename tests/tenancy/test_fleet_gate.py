"""No database is served at the wrong schema, and quarantined databases answer 503 (issue 6)."""

import pytest
import requests
from filelock import FileLock

from runs.services import run_create
from tenancy import connections as tenant_connections
from tenants.models import Database
from tenants.services import api_key_create
from tests.processes import free_port, manage, start_gunicorn, stop_gunicorn, wait_http
from tests.tenancy.fleetkit import columns, fleet_under_v1, ledger, stage


@pytest.mark.processes
def test_request_to_a_database_behind_the_code_never_reaches_a_missing_column(tmp_path):
    data_dir = tmp_path / "data"
    v1 = fleet_under_v1(data_dir, tenants=2, notes=150)
    keys = [
        manage(v1, "create_api_key", f"tenant-{i}").stdout.strip().splitlines()[-1]
        for i in range(2)
    ]
    files = [data_dir / path for path, *_ in ledger(data_dir)]
    old_version = ledger(data_dir)[0][1]
    port = free_port()
    # New code deployed, control plane migrated, no rollout run: both databases are behind.
    v2 = {**stage(v1, "v2"), "PORT": str(port), "ACCESS_LOG": "", "WEB_CONCURRENCY": "1"}
    v2["TENANCY_MIGRATE_ON_OPEN_WAIT_S"] = "0.3"
    manage(v2, "migrate", "--no-input", "-v", "0")
    server = start_gunicorn(v2, tmp_path / "gunicorn.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz")

        def notes(key: str) -> requests.Response:
            return requests.get(
                f"{base}/api/v1/fleet/notes", headers={"Authorization": f"Bearer {key}"}, timeout=30
            )

        # A rollout holds the lock: the request waits briefly, then is told to come back.
        with FileLock(data_dir / "locks" / "rollout.lock", thread_local=False):
            held = notes(keys[0])
            assert held.status_code == 503, held.text
            assert held.json()["error"]["code"] == "schema_migrating"
            assert int(held.headers["Retry-After"]) > 0
            assert "pinned" not in columns(files[0])
        # No rollout: the database is migrated when first opened, then served.
        for key, path in zip(keys, files, strict=True):
            served = notes(key)
            assert served.status_code == 200, served.text
            assert served.json()["count"] == 150
            assert all("pinned" in row for row in served.json()["items"])
            assert "pinned" in columns(path)
        assert {(v != old_version, s) for _, v, s, _ in ledger(data_dir)} == {(True, "ready")}
    finally:
        stop_gunicorn(server)
    assert "no such column" not in (tmp_path / "gunicorn.log").read_text()


@pytest.mark.django_db
def test_quarantined_run_database_answers_503(client, tenant):
    run = run_create(tenant=tenant)
    _, key = api_key_create(tenant=tenant)
    headers = {"Authorization": f"Bearer {key}"}
    ok = client.post(
        f"/api/v1/runs/{run.id}/tool-calls",
        {"name": "search", "args": {}},
        content_type="application/json",
        headers=headers,
    )
    assert ok.status_code == 201, ok.content
    Database.objects.filter(pk=run.database_id).update(
        state=Database.State.QUARANTINED, last_error="dbcheck: quick_check: page 3 is corrupt"
    )
    tenant_connections.close_all()  # as a process that has not opened this database yet
    refused = client.post(
        f"/api/v1/runs/{run.id}/tool-calls",
        {"name": "search", "args": {}},
        content_type="application/json",
        headers=headers,
    )
    assert refused.status_code == 503, refused.content
    assert refused.json()["error"]["code"] == "database_quarantined"
    assert "page 3 is corrupt" in refused.json()["error"]["message"]
    listing = client.get(f"/api/v1/runs/{run.id}/tool-calls", headers=headers)
    assert listing.status_code == 503
    assert listing.json()["error"]["code"] == "database_quarantined"
