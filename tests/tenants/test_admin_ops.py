"""The admin without leaks: tenant data needs view permissions, deletion removes every file and
registry row, suspension and limits take effect at once."""

import pytest
from django.contrib.admin.utils import quote
from django.contrib.auth.models import Permission, User
from django.urls import reverse

from memory.services import memory_put
from runs.models import Run
from runs.services import run_complete, run_create, tool_call_record
from tenancy.context import tenant_context
from tenancy.paths import absolute
from tenants.models import ApiKey, Database, Tenant
from tenants.services import api_key_create, tenant_for_api_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def staff(client):
    user = User.objects.create_user("curious", password="x", is_staff=True)
    client.force_login(user)
    return user


def grant(user: User, *codenames: str) -> User:
    for dotted in codenames:
        app_label, codename = dotted.split(".")
        user.user_permissions.add(
            Permission.objects.get(content_type__app_label=app_label, codename=codename)
        )
    return User.objects.get(pk=user.pk)  # drop the permission cache


def test_staff_without_view_permissions_gets_403_from_both_browsers(client, staff, tenant):
    with tenant_context(tenant):
        memory_put(key="secret/plan", value="launch")
    run = run_create(tenant=tenant)
    tool_call_record(run=run, name="secret_tool", args={})
    memory_url = f"/admin/tenants/tenant/{tenant.pk}/memory/"
    browse_url = f"/admin/runs/run/{run.pk}/browse/"

    for url in (memory_url, browse_url):
        denied = client.get(url)
        assert denied.status_code == 403
        assert b"secret" not in denied.content

    grant(staff, "tenants.view_tenant", "runs.view_run")  # the rows, not their databases
    assert client.get(memory_url).status_code == 403
    assert client.get(browse_url).status_code == 403

    grant(staff, "memory.view_memoryentry")
    assert b"secret/plan" in client.get(memory_url).content
    grant(staff, "runs.view_toolcall", "runs.view_event", "runs.view_statecheckpoint")
    assert b"secret_tool" in client.get(browse_url).content


def admin_url(tenant: Tenant, view: str) -> str:
    # The admin unquotes object ids ("_23" is "#"): a raw "ten_23..." id names another tenant.
    return reverse(f"admin:tenants_tenant_{view}", args=[quote(tenant.pk)])


def tenant_files(tenant: Tenant):
    return absolute(tenant.database.path).parent


@pytest.mark.parametrize("how", ["delete_view", "delete_selected"])
def test_admin_delete_leaves_no_file_and_no_registry_row(admin_client, tenant, other_tenant, how):
    _, raw = api_key_create(tenant=tenant)
    with tenant_context(tenant):
        memory_put(key="k", value=1)
    active = run_create(tenant=tenant)
    tool_call_record(run=active, name="x", args={})
    run_complete(run=run_create(tenant=tenant), status="succeeded")
    directory = tenant_files(tenant)
    assert len(list(directory.rglob("*.sqlite3"))) == 3
    kept = run_create(tenant=other_tenant)

    if how == "delete_view":
        page = admin_client.get(admin_url(tenant, "delete"))
        assert page.status_code == 200 and b"Are you sure" in page.content
        done = admin_client.post(admin_url(tenant, "delete"), {"post": "yes"})
    else:
        done = admin_client.post(
            "/admin/tenants/tenant/",
            {"action": "delete_selected", "_selected_action": [tenant.pk], "post": "yes"},
        )
    assert done.status_code == 302

    assert not directory.exists()
    assert not Tenant.objects.filter(pk=tenant.pk).exists()
    assert not ApiKey.objects.filter(tenant_id=tenant.pk).exists()
    assert not Run.objects.filter(tenant_id=tenant.pk).exists()
    assert not Database.objects.filter(path__contains=tenant.pk).exists()
    assert tenant_for_api_key(raw) is None
    assert absolute(kept.database.path).exists() and Run.objects.filter(pk=kept.pk).exists()
    assert Database.objects.count() == 2  # the other tenant's database and its run's


def test_suspending_in_admin_refuses_the_key_at_once(admin_client, tenant, settings):
    settings.API_LOOKUP_CACHE_SECONDS = 60  # memoised: only the revocation can drop it
    _, raw = api_key_create(tenant=tenant)
    assert tenant_for_api_key(raw) == tenant
    form = {"name": tenant.name, "status": "suspended"}
    response = admin_client.post(admin_url(tenant, "change"), form)
    assert response.status_code == 302, response.content
    assert tenant_for_api_key(raw) is None


def test_limit_overrides_are_editable_in_admin(admin_client, tenant):
    page = admin_client.get(admin_url(tenant, "change"))
    for field in (b"max_active_runs", b"max_run_db_bytes", b"run_idle_timeout_s"):
        assert b'name="' + field + b'"' in page.content
    form = {
        "name": tenant.name,
        "status": "active",
        "max_active_runs": "3",
        "max_run_db_bytes": str(10 * 1024 * 1024),
        "run_idle_timeout_s": "3600",
    }
    assert admin_client.post(admin_url(tenant, "change"), form).status_code == 302
    tenant.refresh_from_db()
    assert (tenant.max_active_runs, tenant.max_run_db_bytes) == (3, 10 * 1024 * 1024)
    assert tenant.idle_timeout_s == 3600

    created = admin_client.post(
        "/admin/tenants/tenant/add/",
        {"slug": "limited", "status": "active", "max_active_runs": "2"},
    )
    assert created.status_code == 302
    assert Tenant.objects.get(slug="limited").max_active_runs == 2


def test_admin_and_cli_share_the_name_rule(admin_client, tenant):
    too_long = "n" * 201
    page = admin_client.post(admin_url(tenant, "change"), {"name": too_long, "status": "active"})
    assert page.status_code == 200 and b"at most 200 characters" in page.content


def test_services_refuse_names_the_column_cannot_hold(tenant):
    from project.exceptions import InvalidInput
    from tenants.services import tenant_create

    with pytest.raises(InvalidInput, match=r"name .* at most 200 characters"):
        tenant_create(slug="long", name="n" * 201)
    with pytest.raises(InvalidInput, match="Null characters are not allowed"):
        tenant_create(slug="nul", name="a\x00b")
    with pytest.raises(InvalidInput, match="at most 100 characters"):
        api_key_create(tenant=tenant, name="k" * 101)
    assert not Tenant.objects.exclude(pk=tenant.pk).exists() and not ApiKey.objects.exists()


def test_api_keys_cannot_be_deleted_in_the_admin_only_revoked(admin_client, tenant):
    from tenants.services import api_key_create

    key, _ = api_key_create(tenant=tenant)
    assert admin_client.get(f"/admin/tenants/apikey/{key.pk}/delete/").status_code == 403
    listing = admin_client.get("/admin/tenants/apikey/").content.decode()
    assert "delete_selected" not in listing and "revoke" in listing
