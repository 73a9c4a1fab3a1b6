"""Idle runs expire: closed to writes, no longer counted toward the tenant's active-run limit.

Idleness is read from the run database's file times, so a test ages a run by moving its
`created_at` and its files' modification times back, as a day without writes would.
"""

import os
from datetime import timedelta

import pytest
from django.core.management import call_command
from django.utils import timezone

from runs.models import Run
from runs.services import run_last_write, runs_expire_idle
from runs.tasks import runs_expire_idle as expire_task
from tenancy import connections as tenant_connections
from tenancy.paths import absolute
from tenants.models import Database

pytestmark = pytest.mark.django_db

DAY = 24 * 60 * 60


def age(run_id: str, seconds: int) -> None:
    """Make run `run_id` look created, and last written, `seconds` ago."""
    # Closing the last connection checkpoints the -wal into the file (a write): do it first.
    tenant_connections.close_all()
    run = Run.objects.select_related("database").get(id=run_id)
    Run.objects.filter(id=run_id).update(created_at=run.created_at - timedelta(seconds=seconds))
    then = timezone.now().timestamp() - seconds
    path = absolute(run.database.path)
    for file in (path, path.with_name(path.name + "-wal")):
        if file.exists():
            os.utime(file, (then, then))


@pytest.fixture
def one_slot(tenant):
    tenant.max_active_runs = 1
    tenant.save(update_fields=["max_active_runs"])
    return tenant


@pytest.mark.parametrize("expire", ["task", "command"])
def test_idle_run_expires_and_frees_its_slot(post, api, one_slot, expire, capsys):
    run_id = post("/api/v1/runs", {}).json()["id"]
    assert post(f"/api/v1/runs/{run_id}/tool-calls", {"name": "search"}).status_code == 201
    full = post("/api/v1/runs", {})
    assert full.status_code == 429 and full.json()["error"]["code"] == "too_many_active_runs"

    age(run_id, DAY + 60)
    if expire == "task":
        assert expire_task() == {"checked": 1, "expired": 1, "errors": 0}
    else:
        call_command("expire_runs")
        assert f"expired {run_id}" in capsys.readouterr().out

    run = api.get(f"/api/v1/runs/{run_id}").json()
    assert run["status"] == "expired" and run["counts"]["tool_calls"] == 1
    assert [r["id"] for r in api.get("/api/v1/runs?status=expired").json()["items"]] == [run_id]
    refused = post(f"/api/v1/runs/{run_id}/tool-calls", {"name": "late"})
    assert refused.status_code == 409 and refused.json()["error"]["code"] == "run_closed"
    assert post("/api/v1/runs", {}).status_code == 201


def test_a_recent_write_keeps_an_old_run_active(post, tenant):
    run_id = post("/api/v1/runs", {}).json()["id"]
    age(run_id, DAY + 60)
    assert post(f"/api/v1/runs/{run_id}/events", {"events": [{"kind": "tick"}]}).status_code == 201
    result = runs_expire_idle()
    assert result.checked == 1 and result.expired == []
    assert Run.objects.get(id=run_id).status == "active"


def test_opening_an_idle_database_is_not_a_write(post, api, tenant):
    run_id = post("/api/v1/runs", {}).json()["id"]
    age(run_id, DAY + 60)
    run = Run.objects.select_related("database").get(id=run_id)
    before = run_last_write(run=run)
    wal = absolute(run.database.path).with_name(absolute(run.database.path).name + "-wal")
    assert not wal.exists()
    assert api.get(f"/api/v1/runs/{run_id}/events").status_code == 200  # opens, reads
    assert wal.exists()  # SQLite made an empty -wal on opening: that is not a write
    assert run_last_write(run=run) == before
    assert runs_expire_idle().expired == [run_id]


def test_tenant_override_sets_the_timeout_and_zero_means_never(post, tenant, other_tenant):
    run_id = post("/api/v1/runs", {}).json()["id"]
    age(run_id, 120)
    assert runs_expire_idle().expired == []  # RUN_IDLE_TIMEOUT is a day
    tenant.run_idle_timeout_s = 60
    tenant.save(update_fields=["run_idle_timeout_s"])
    assert runs_expire_idle().expired == [run_id]

    other_tenant.run_idle_timeout_s = 0
    other_tenant.save(update_fields=["run_idle_timeout_s"])
    from runs.services import run_create

    kept = run_create(tenant=other_tenant)
    age(kept.id, 10 * DAY)
    assert runs_expire_idle().expired == []
    assert Run.objects.get(id=kept.id).status == "active"


def test_completed_runs_are_never_expired(post, tenant):
    run_id = post("/api/v1/runs", {}).json()["id"]
    assert post(f"/api/v1/runs/{run_id}/complete", {"status": "succeeded"}).status_code == 200
    age(run_id, DAY + 60)
    assert runs_expire_idle().checked == 0
    assert Run.objects.get(id=run_id).status == "succeeded"


def test_celery_beat_schedules_the_registered_expiry_task(settings):
    from project.celery import app

    app.loader.import_default_modules()
    entry = app.conf.beat_schedule["expire-idle-runs"]
    assert entry["task"] in app.tasks and app.tasks[entry["task"]].run is expire_task.run
    assert entry["schedule"] == float(settings.RUN_EXPIRE_EVERY_S)


def test_idle_runs_with_a_missing_or_quarantined_database_still_expire(post, api, tenant):
    gone, quarantined, healthy = (post("/api/v1/runs", {}).json()["id"] for _ in range(3))
    for run_id in (gone, quarantined, healthy):
        age(run_id, DAY + 60)
    path = absolute(Run.objects.select_related("database").get(id=gone).database.path)
    path.unlink()
    Database.objects.filter(run_owner__id=quarantined).update(state="quarantined")

    # The broken runs are ended in the control plane only; none of them stops the others.
    result = runs_expire_idle()
    assert sorted(result.expired) == sorted([gone, quarantined, healthy]) and not result.errors
    statuses = dict(Run.objects.filter(tenant=tenant).values_list("id", "status"))
    assert statuses == {gone: "expired", quarantined: "expired", healthy: "expired"}


def test_a_quarantined_run_can_be_completed_as_failed(post, api):
    run_id = post("/api/v1/runs", {}).json()["id"]
    tenant_connections.close_all()
    Database.objects.filter(run_owner__id=run_id).update(state="quarantined")
    refused = post(f"/api/v1/runs/{run_id}/complete", {"status": "succeeded"})
    assert refused.status_code == 503
    failed = post(f"/api/v1/runs/{run_id}/complete", {"status": "failed"})
    assert failed.status_code == 200, failed.content
    assert failed.json()["status"] == "failed"
    assert post("/api/v1/runs", {}).status_code == 201
