"""The admin as an operator uses it: provisioning, keys shown once, revocation, memory browser."""

import re

import pytest

from memory.services import memory_put
from tenancy.context import tenant_context
from tenancy.paths import absolute
from tenants.models import ApiKey, Tenant
from tenants.services import tenant_for_api_key

pytestmark = pytest.mark.django_db


def test_adding_a_tenant_in_admin_provisions_its_database(admin_client):
    response = admin_client.post(
        "/admin/tenants/tenant/add/", {"slug": "from-admin", "name": "Admin", "status": "active"}
    )
    assert response.status_code == 302, response.content
    tenant = Tenant.objects.get(slug="from-admin")
    assert absolute(tenant.database.path).exists()
    with tenant_context(tenant):
        memory_put(key="works", value=True)


def test_admin_rejects_a_bad_slug_without_provisioning(admin_client, data_dir):
    response = admin_client.post(
        "/admin/tenants/tenant/add/", {"slug": "Bad_Slug", "status": "active"}
    )
    assert response.status_code == 200
    assert b"lowercase letters" in response.content
    assert not Tenant.objects.exists()
    assert not (data_dir / "tenants").exists()


def test_api_key_created_in_admin_is_shown_once_and_works(admin_client, tenant):
    response = admin_client.post(
        "/admin/tenants/apikey/add/", {"tenant": tenant.pk, "name": "ops"}, follow=True
    )
    raw = re.search(rb"adb_[0-9a-z]+_[A-Za-z0-9_-]+", response.content).group().decode()
    assert tenant_for_api_key(raw) == tenant
    key = ApiKey.objects.get()
    assert raw not in key.key_hash and key.prefix in raw

    admin_client.post(
        "/admin/tenants/apikey/",
        {"action": "revoke", "_selected_action": [key.pk]},
    )
    assert tenant_for_api_key(raw) is None


def test_memory_browser_shows_that_tenants_entries_only(admin_client, tenant, other_tenant):
    with tenant_context(tenant):
        memory_put(key="acme/plan", value={"step": 1})
    with tenant_context(other_tenant):
        memory_put(key="globex/plan", value={"step": 2})
    page = admin_client.get(f"/admin/tenants/tenant/{tenant.pk}/memory/")
    assert page.status_code == 200
    assert b"acme/plan" in page.content and b"globex/plan" not in page.content
    assert admin_client.get("/admin/tenants/database/").status_code == 200
