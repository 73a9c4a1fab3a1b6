import io
import json
import os
import shutil
import sqlite3
from contextlib import closing

import pytest
from django.core.management import CommandError, call_command

from tenancy import connections as tenant_connections
from tenancy.ids import new_id
from tenancy.paths import absolute, tenant_db_relpath
from tenancy.scopes import Scope
from tenancy.templates import template_path
from tenants.models import Database
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db


def dbcheck(*args: str) -> tuple[int, str]:
    out = io.StringIO()
    try:
        call_command("dbcheck", *args, stdout=out, stderr=io.StringIO())
    except CommandError as exc:
        return exc.returncode, out.getvalue()
    return 0, out.getvalue()


def test_clean_fleet_has_no_findings_and_reports_sizes():
    tenant_create(slug="acme")
    code, out = dbcheck("--json")
    report = json.loads(out)
    assert code == 0 and report["findings"] == []
    assert report["checked"] == 1 and report["databases"][0]["bytes"] > 0


def test_finds_orphans_missing_damaged_and_behind_then_fixes_what_is_safe(data_dir):
    healthy, missing, damaged, behind = (
        tenant_create(slug=slug) for slug in ("healthy", "missing", "damaged", "behind")
    )
    tenant_connections.close_all()
    old_orphan = absolute(tenant_db_relpath(new_id("ten")))
    young_orphan = absolute(tenant_db_relpath(new_id("ten")))
    for orphan in (old_orphan, young_orphan):
        orphan.parent.mkdir(parents=True)
        shutil.copyfile(template_path(Scope.TENANT), orphan)
    os.utime(old_orphan, (1_000_000_000, 1_000_000_000))  # a provisioning killed long ago
    absolute(missing.database.path).unlink()
    with absolute(damaged.database.path).open("r+b") as f:
        f.seek(4096)
        f.write(b"\xde\xad" * 4096)
    with closing(sqlite3.connect(absolute(behind.database.path))) as conn, conn:
        conn.execute("DELETE FROM django_migrations WHERE app = 'memory'")

    code, out = dbcheck("--json")
    assert code == 1
    found = {(f["kind"], f["path"]) for f in json.loads(out)["findings"]}
    assert found == {
        ("orphan_file", str(old_orphan.relative_to(data_dir))),
        ("missing_file", missing.database.path),
        ("damaged", damaged.database.path),
        ("behind", behind.database.path),
    }
    assert old_orphan.exists()  # nothing changes without --fix
    assert not Database.objects.filter(state=Database.State.QUARANTINED).exists()

    code, out = dbcheck("--fix")
    assert code == 1 and "(fixed)" in out
    assert not old_orphan.exists() and not old_orphan.parent.exists()
    assert young_orphan.exists()  # may be a provisioning in progress
    states = dict(Database.objects.values_list("path", "state"))
    assert states[missing.database.path] == Database.State.QUARANTINED
    assert states[damaged.database.path] == Database.State.QUARANTINED
    assert states[healthy.database.path] == states[behind.database.path] == Database.State.READY

    code, out = dbcheck("--deep")
    assert code == 1 and "QUARANTINED" in out and "ORPHAN_FILE" not in out
