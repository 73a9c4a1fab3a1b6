import sqlite3

import pytest
from django.db import connection

from project.exceptions import Conflict, InvalidInput
from tenancy.paths import absolute
from tenancy.scopes import Scope
from tenancy.templates import code_migrations_digest, code_version, template_path
from tenants.models import Database, Tenant
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db


def files_under(directory) -> list[str]:
    return sorted(str(p) for p in directory.rglob("*") if p.is_file())


def test_tenant_database_is_a_copy_of_the_template_registered_with_its_version(data_dir):
    tenant = tenant_create(slug="acme", name="Acme Inc")
    path = absolute(tenant.database.path)
    assert path.parent.name == tenant.id  # derived from the server's id, not the slug
    assert tenant.database.schema_version == code_version()
    assert tenant.database.kind == Database.Kind.TENANT
    with sqlite3.connect(path) as conn:
        assert conn.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
        applied = conn.execute("SELECT count(*) FROM django_migrations").fetchone()[0]
    assert applied > 0
    template = template_path(Scope.TENANT)
    assert path.read_bytes() == template.read_bytes()


def test_failed_registration_leaves_no_file_and_no_rows(data_dir):
    # A real failure of the control-plane insert, after the file copy has happened.
    with connection.cursor() as cursor:
        if connection.vendor == "postgresql":
            cursor.execute(
                "CREATE FUNCTION refuse() RETURNS trigger AS $$ BEGIN "
                "RAISE EXCEPTION 'disk full'; END $$ LANGUAGE plpgsql"
            )
            cursor.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON tenants_tenant "
                "FOR EACH ROW EXECUTE FUNCTION refuse()"
            )
        else:
            cursor.execute(
                "CREATE TRIGGER refuse BEFORE INSERT ON tenants_tenant "
                "BEGIN SELECT RAISE(ABORT, 'disk full'); END"
            )
    with pytest.raises(Exception, match="disk full"):
        tenant_create(slug="doomed")
    assert not Tenant.objects.exists()
    assert not Database.objects.exists()
    assert files_under(data_dir / "tenants") == []


def test_failed_copy_leaves_nothing_registered(data_dir):
    (data_dir / "tenants").write_text("not a directory")
    with pytest.raises(OSError):
        tenant_create(slug="doomed")
    assert not Tenant.objects.exists()
    assert not Database.objects.exists()


def test_duplicate_slug_is_a_conflict_and_leaves_no_extra_file(data_dir):
    tenant_create(slug="acme")
    with pytest.raises(Conflict, match="already exists"):
        tenant_create(slug="acme")
    assert Tenant.objects.count() == 1
    assert len(list((data_dir / "tenants").iterdir())) == 1


@pytest.mark.parametrize("slug", ["", "Acme", "a_b", "-a", "a-", "../etc", "x" * 64, "a b"])
def test_bad_slugs_are_refused_with_the_rule(slug):
    with pytest.raises(InvalidInput, match="lowercase letters"):
        tenant_create(slug=slug)
    assert not Tenant.objects.exists()


def test_template_is_built_when_missing_and_named_by_schema_version_and_content(data_dir):
    for leftover in (data_dir / "templates").iterdir():
        leftover.unlink()
    tenant = tenant_create(slug="fresh")
    built = list((data_dir / "templates").iterdir())
    assert [p.name for p in built] == [
        f"tenant-{code_version()}-{code_migrations_digest()}.sqlite3"
    ]
    assert not list(data_dir.glob("templates/.*"))  # no temporary build files left
    assert absolute(tenant.database.path).read_bytes() == built[0].read_bytes()
