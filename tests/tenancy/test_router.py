import sqlite3
import threading

import pytest
from asgiref.sync import async_to_sync, sync_to_async
from django.db import connection

from memory.models import MemoryEntry
from memory.services import memory_put
from tenancy.context import current_tenant, tenant_context
from tenancy.exceptions import NoScopeBound
from tenancy.ids import new_id
from tenancy.paths import absolute, tenant_alias
from tenancy.router import ScopeRouter

pytestmark = pytest.mark.django_db


def tables(path) -> set[str]:
    with sqlite3.connect(path) as conn:
        return {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}


def test_tenant_query_without_tenant_raises(tenant):
    with pytest.raises(NoScopeBound, match="No tenant is bound"):
        MemoryEntry.objects.count()
    with pytest.raises(NoScopeBound, match="tenant_context"):
        MemoryEntry.objects.create(key="k", value=1, size_bytes=1)


def test_current_tenant_without_binding_raises_instead_of_none():
    with pytest.raises(NoScopeBound):
        current_tenant()


def test_rows_land_in_the_bound_tenants_file_only(tenant, other_tenant):
    with tenant_context(tenant):
        memory_put(key="secret", value={"owner": "acme"})
    with sqlite3.connect(absolute(tenant.database.path)) as conn:
        assert conn.execute("SELECT key FROM tenants_memoryentry").fetchall() == [("secret",)]
    with sqlite3.connect(absolute(other_tenant.database.path)) as conn:
        assert conn.execute("SELECT count(*) FROM tenants_memoryentry").fetchone() == (0,)
    with tenant_context(other_tenant):
        assert not MemoryEntry.objects.filter(key="secret").exists()


def test_allow_migrate_keeps_each_scope_in_its_own_databases(tenant):
    tenant_tables = tables(absolute(tenant.database.path))
    assert "tenants_memoryentry" in tenant_tables
    assert not {"tenants_tenant", "tenants_apikey", "auth_user"} & tenant_tables
    control_tables = set(connection.introspection.table_names())
    assert "tenants_tenant" in control_tables
    assert "tenants_memoryentry" not in control_tables


def test_router_answers_scope_by_alias():
    router = ScopeRouter()
    assert router.allow_migrate("default", "tenants", "tenant") is True
    assert router.allow_migrate("default", "memory", "memoryentry") is False
    alias = tenant_alias(new_id("ten"))
    assert router.allow_migrate(alias, "memory", "memoryentry") is True
    assert router.allow_migrate(alias, "auth", "user") is False
    assert router.allow_migrate(alias, "tenants", None) is False
    assert router.allow_migrate(alias, "tenants", None, scope="tenant") is True


def test_context_restores_the_previous_binding(tenant, other_tenant):
    with tenant_context(tenant):
        with tenant_context(other_tenant):
            assert current_tenant() == other_tenant
        assert current_tenant() == tenant
    with pytest.raises(NoScopeBound):
        current_tenant()


def test_context_crosses_sync_to_async_but_not_new_threads(tenant):
    seen: list[object] = []

    async def inner():
        return await sync_to_async(lambda: current_tenant().slug)()

    with tenant_context(tenant):
        assert async_to_sync(inner)() == "acme"

        def other_thread():
            try:
                current_tenant()
            except NoScopeBound as exc:
                seen.append(exc)

        worker = threading.Thread(target=other_thread)
        worker.start()
        worker.join()
    assert len(seen) == 1 and isinstance(seen[0], NoScopeBound)


def test_row_from_one_tenant_cannot_be_saved_into_another(tenant, other_tenant):
    with tenant_context(tenant):
        memory_put(key="k", value=1)
        entry = MemoryEntry.objects.get(key="k")
    with tenant_context(other_tenant), pytest.raises(NoScopeBound, match="never move"):
        entry.save()
    with tenant_context(other_tenant):
        assert MemoryEntry.objects.count() == 0


def test_log_records_carry_the_bound_tenant(tenant):
    import logging

    from tenancy.logging import ScopeFilter

    def stamped() -> logging.LogRecord:
        record = logging.LogRecord("x", logging.INFO, __file__, 1, "msg", (), None)
        assert ScopeFilter().filter(record)
        return record

    with tenant_context(tenant):
        assert stamped().tenant == tenant.id
    assert stamped().tenant == "-"
