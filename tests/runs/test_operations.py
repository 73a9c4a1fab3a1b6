"""Operators' views of runs: admin browser and `dbstats`."""

import io
import json

import pytest
from django.core.management import CommandError, call_command

from runs import services
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db


def test_admin_lists_runs_and_browses_one_runs_database(admin_client, tenant, other_tenant):
    run = services.run_create(tenant=tenant, metadata={}, labels=[])
    other = services.run_create(tenant=other_tenant, metadata={}, labels=[])
    services.tool_call_record(run=run, name="search_web", args={"q": "acme"})
    services.events_append(run=run, events=[("thought", {"text": "plan-acme"})])
    services.state_put(run=run, state={"step": "acme-state"}, expected_version=0)
    services.tool_call_record(run=other, name="globex_tool", args={})

    listing = admin_client.get("/admin/runs/run/")
    assert listing.status_code == 200 and run.id.encode() in listing.content
    page = admin_client.get(f"/admin/runs/run/{run.id}/browse/")
    assert page.status_code == 200
    for expected in (b"search_web", b"plan-acme", b"acme-state"):
        assert expected in page.content
    assert b"globex_tool" not in page.content
    assert admin_client.get("/admin/runs/run/run_doesnotexist000000/browse/").status_code == 404


def test_dbstats_reports_databases_sizes_and_runs_by_status(tenant):
    empty = tenant_create(slug="empty")
    runs = [services.run_create(tenant=tenant) for _ in range(3)]
    services.run_complete(run=runs[0], status="succeeded")
    services.run_complete(run=runs[1], status="failed")
    out = io.StringIO()
    call_command("dbstats", "--json", stdout=out, stderr=io.StringIO())
    rows = {row["tenant"]: row for row in map(json.loads, out.getvalue().splitlines())}
    assert rows["acme"]["databases"] == 4
    assert rows["acme"]["runs"] == {"active": 1, "failed": 1, "succeeded": 1}
    assert rows["acme"]["bytes"] > rows[empty.slug]["bytes"] > 0
    assert rows[empty.slug] == {**rows[empty.slug], "databases": 1, "runs": {}}

    table = io.StringIO()
    call_command("dbstats", "--tenant", "acme", stdout=table, stderr=io.StringIO())
    assert "acme" in table.getvalue() and "succeeded 1" in table.getvalue()
    with pytest.raises(CommandError, match="No tenant 'nobody'"):
        call_command("dbstats", "--tenant", "nobody")
