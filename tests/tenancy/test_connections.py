import os
from pathlib import Path

import pytest
from django.db import connections

from memory.models import MemoryEntry
from tenancy import connections as tenant_connections
from tenancy.context import tenant_context
from tenancy.paths import absolute
from tenants.services import tenant_create

pytestmark = pytest.mark.django_db


def open_fds_under(directory: Path) -> int:
    count = 0
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory / "tenants")):
            count += 1
    return count


def touch_all(tenants) -> None:
    for tenant in tenants:
        with tenant_context(tenant):
            MemoryEntry.objects.count()


def test_lru_closes_evicted_connections(settings, data_dir):
    settings.TENANCY_CONNECTIONS_PER_THREAD = 4
    tenants = [tenant_create(slug=f"t{i}") for i in range(12)]
    touch_all(tenants[:4])
    fds_for_four = open_fds_under(data_dir)
    assert fds_for_four >= 4  # each open WAL connection holds the db, -wal and -shm files

    touch_all(tenants)
    assert open_fds_under(data_dir) == fds_for_four
    opened = tenant_connections.open_aliases()
    assert len(opened) == 4
    assert opened == [f"tenant__{t.id}" for t in tenants[-4:]]
    # Evicted aliases are gone from Django's per-thread storage too.
    evicted = f"tenant__{tenants[0].id}"
    assert not hasattr(connections._connections, evicted)

    tenant_connections.close_all()
    assert open_fds_under(data_dir) == 0


def test_lru_keeps_a_connection_that_is_inside_a_transaction(settings):
    from django.db import transaction

    from tenancy.router import bound_alias
    from tenancy.scopes import Scope

    settings.TENANCY_CONNECTIONS_PER_THREAD = 1
    first, second = tenant_create(slug="first"), tenant_create(slug="second")
    with tenant_context(first), transaction.atomic(using=bound_alias(Scope.TENANT)):
        MemoryEntry.objects.create(key="a", value=1, size_bytes=1)
        touch_all([second])  # would evict `first` if it were idle
        MemoryEntry.objects.create(key="b", value=2, size_bytes=1)
    with tenant_context(first):
        assert sorted(MemoryEntry.objects.values_list("key", flat=True)) == ["a", "b"]


def test_registered_aliases_do_not_grow_with_tenants():
    before = set(connections.settings)
    touch_all([tenant_create(slug=f"n{i}") for i in range(20)])
    assert set(connections.settings) == before
    assert len(connections.all()) == len(before)


def test_connections_stay_open_between_queries():
    tenant = tenant_create(slug="warm")
    touch_all([tenant])
    alias = f"tenant__{tenant.id}"
    raw = connections[alias].connection
    assert raw is not None
    touch_all([tenant])
    assert connections[alias].connection is raw


def test_missing_database_file_is_an_error_not_a_new_empty_database():
    from tenancy.exceptions import DatabaseUnavailable

    tenant = tenant_create(slug="gone")
    path = absolute(tenant.database.path)
    path.unlink()
    with tenant_context(tenant), pytest.raises(DatabaseUnavailable, match="missing"):
        MemoryEntry.objects.count()
    assert not path.exists()


def test_connection_pragmas():
    tenant = tenant_create(slug="pragmas")
    touch_all([tenant])
    with connections[f"tenant__{tenant.id}"].cursor() as cursor:
        assert cursor.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert cursor.execute("PRAGMA synchronous").fetchone()[0] == 1  # NORMAL
        assert cursor.execute("PRAGMA foreign_keys").fetchone()[0] == 1
        assert cursor.execute("PRAGMA busy_timeout").fetchone()[0] == 5000
    assert connections[f"tenant__{tenant.id}"].transaction_mode == "IMMEDIATE"
