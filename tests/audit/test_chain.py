"""The run's hash-chained audit trail: written with every write, verified, tamper-evident."""

import pytest
from django.core.management import CommandError, call_command

from audit.chain import GENESIS, entry_hash
from audit.verify import verify_file
from runs.models import Run
from tenancy.paths import absolute
from tests.audit.conftest import sql

pytestmark = pytest.mark.django_db


def _path(run_id: str):
    run = Run.objects.select_related("database").get(pk=run_id)
    return absolute(run.database.path)


def test_every_write_appends_a_chained_entry(busy_run, post):
    path = _path(busy_run)
    post(f"/api/v1/runs/{busy_run}/complete", {"status": "succeeded"})
    rows = sql(path, "SELECT seq, kind, body, created_at, prev_hash, hash FROM audit_runentry")
    kinds = [row[1] for row in rows]
    assert kinds == [
        "tool_call",
        "events",
        "outcome",
        "tool_call",
        "events",
        "outcome",
        "tool_call",
        "events",
        "state",
        "state",
        "close",
    ]
    prev = GENESIS
    for seq, kind, body, created_at, prev_hash, digest in rows:
        assert prev_hash == prev
        assert digest == entry_hash(
            seq=seq, kind=kind, created_at=created_at, prev_hash=prev_hash, body=body
        )
        prev = digest
    report = verify_file(path)
    assert report.ok, report.first
    assert report.entries == 11


def test_a_refused_write_leaves_no_entry(busy_run, post):
    stale = post(f"/api/v1/runs/{busy_run}/state", {"state": {}, "version": 0}, method="put")
    assert stale.status_code == 409
    assert sql(_path(busy_run), "SELECT count(*) FROM audit_runentry")[0][0] == 10
    assert verify_file(_path(busy_run)).ok


def test_verify_names_a_flipped_payload_byte(busy_run):
    path = _path(busy_run)
    (payload,) = sql(path, "SELECT payload FROM runs_event WHERE seq = 5")[0]
    flipped = payload.replace("h", "H", 1)
    assert flipped != payload and len(flipped) == len(payload)
    sql(path, "UPDATE runs_event SET payload = ? WHERE seq = 5", flipped)
    report = verify_file(path)
    assert not report.ok
    assert report.problems[0][0] == "event 5"
    with pytest.raises(CommandError, match="event 5"):
        call_command("verify_run", busy_run)


def test_verify_names_a_deleted_event_row(busy_run):
    path = _path(busy_run)
    sql(path, "DELETE FROM runs_event WHERE seq = 4")
    report = verify_file(path)
    assert report.problems[0] == ("event 4", "missing from the table (the log has it)")
    with pytest.raises(CommandError, match="event 4"):
        call_command("verify_run", str(path))


def test_verify_names_a_changed_audit_entry(busy_run):
    path = _path(busy_run)
    (body,) = sql(path, "SELECT body FROM audit_runentry WHERE seq = 1")[0]
    sql(path, "UPDATE audit_runentry SET body = ? WHERE seq = 1", body.replace("x1", "y1"))
    assert verify_file(path).problems[0][0] == "audit entry 1"


def test_verify_names_an_added_row(busy_run):
    path = _path(busy_run)
    sql(
        path,
        "INSERT INTO runs_event (seq, kind, payload, created_at) "
        "VALUES (99, 'step', 'null', '2026')",
    )
    assert verify_file(path).problems[0] == ("event 99", "not in the audit log (added)")


def test_tenant_trail_records_keys(tenant):
    from audit.models import TenantEntry
    from tenancy.context import tenant_context
    from tenants.services import api_key_create, api_key_revoke

    key, _ = api_key_create(tenant=tenant, name="ci")
    api_key_revoke(key=key)
    with tenant_context(tenant):
        entries = list(TenantEntry.objects.order_by("seq"))
    assert [e.kind for e in entries] == ["api_key_created", "api_key_revoked"]
    assert entries[1].prev_hash == entries[0].hash
