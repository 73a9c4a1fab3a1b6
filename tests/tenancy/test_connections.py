import gc
import os
import threading
from contextlib import suppress
from pathlib import Path

import pytest
from django.db import connections

from memory.models import MemoryEntry
from tenancy import connections as tenant_connections
from tenancy.context import tenant_context
from tenancy.paths import absolute, tenant_alias
from tenants.services import tenant_create
from tests.runs.test_faults_http import replace
from tests.tenancy.threads import in_another_thread

pytestmark = pytest.mark.django_db


def fd_targets() -> list[str]:
    """What this process's open descriptors point to."""
    targets = []
    for fd in os.listdir("/proc/self/fd"):
        with suppress(OSError):
            targets.append(os.readlink(f"/proc/self/fd/{fd}"))
    return targets


def open_fds_under(directory: Path) -> int:
    return sum(target.startswith(str(directory / "tenants")) for target in fd_targets())


def touch_all(tenants) -> None:
    for tenant in tenants:
        with tenant_context(tenant):
            MemoryEntry.objects.count()


def idle_in_the_pool(slug: str):
    """A new tenant whose connection was used, then given back: it waits idle in the pool."""
    tenant = tenant_create(slug=slug)
    alias = tenant_alias(tenant.id)
    touch_all([tenant])
    tenant_connections.give_back()
    assert tenant_connections.idle_aliases() == [alias]
    return tenant, alias


def test_a_thread_over_its_share_closes_its_oldest_and_the_pool_keeps_at_most_its_limit(
    settings, data_dir
):
    settings.TENANCY_CONNECTIONS_PER_THREAD = 4
    settings.TENANCY_IDLE_CONNECTIONS = 2
    tenants = [tenant_create(slug=f"t{i}") for i in range(12)]
    touch_all(tenants[:1])
    fds_for_one = open_fds_under(data_dir)
    assert fds_for_one >= 1  # each open WAL connection holds the db, -wal and -shm files

    touch_all(tenants)
    assert tenant_connections.open_aliases() == [f"tenant__{t.id}" for t in tenants[-4:]]
    assert tenant_connections.idle_aliases() == []  # past its share a thread closes, not pools
    assert open_fds_under(data_dir) == 4 * fds_for_one
    # Closed aliases are gone from Django's per-thread storage.
    assert not hasattr(connections._connections, f"tenant__{tenants[7].id}")

    tenant_connections.give_back()  # the pool keeps the 2 most recently returned
    assert tenant_connections.open_aliases() == []
    assert tenant_connections.idle_aliases() == [f"tenant__{t.id}" for t in tenants[-2:]]
    assert open_fds_under(data_dir) == 2 * fds_for_one

    tenant_connections.close_all()
    assert open_fds_under(data_dir) == 0
    assert tenant_connections.idle_aliases() == []


def four_idle_for_three_places(settings):
    """An older database idle once, a busy one idle twice (a concurrent request opened a second
    copy), a newest one idle once; the pool keeps 3. Return the three tenants and the open
    count before the last give-back."""
    settings.TENANCY_IDLE_CONNECTIONS = 3
    older, _ = idle_in_the_pool("older")
    busy = tenant_create(slug="busy")
    touch_all([busy])  # this thread holds busy's connection...
    # ...so a concurrent request to it opens a second one, and gives it back when it ends.
    assert in_another_thread(lambda: touch_all([busy])) is None
    tenant_connections.give_back()
    newest = tenant_create(slug="newest")
    touch_all([newest])
    before = tenant_connections.open_count()
    tenant_connections.give_back()  # 4 idle, limit 3: one is closed
    return older, busy, newest, before


def served_from_the_pool(tenants) -> int:
    """Use `tenants` in another thread; return how many connections were open meanwhile."""
    opened: list[int] = []

    def step() -> None:
        touch_all(tenants)
        opened.append(tenant_connections.open_count())  # before the thread gives them back

    assert in_another_thread(step) is None
    return opened[0]


@pytest.mark.django_db(transaction=True)  # another thread opens a file: its gate reads the registry
def test_the_pool_closes_a_spare_copy_before_the_only_idle_connection_of_a_recent_database(
    settings, monkeypatch
):
    """Past its limit the pool closes a spare copy of a database that has several idle, not the
    only idle connection of a database returned a moment ago: that database's next request would
    open its file again."""
    monkeypatch.setattr(tenant_connections, "SPARE_FIRST_S", 3600.0)  # every return is recent
    older, busy, newest, before = four_idle_for_three_places(settings)

    aliases = [tenant_alias(t.id) for t in (older, busy, newest)]
    assert tenant_connections.idle_aliases() == aliases
    # busy's spare is closed, but SQLite keeps its descriptor while busy's other copy is open,
    # and the budget keeps counting it.
    assert tenant_connections.open_count() == before == 4
    assert served_from_the_pool([older, busy, newest]) == 4  # no file opened again
    tenant_connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_the_pool_closes_a_database_idle_for_a_while_before_a_spare_copy(settings, monkeypatch):
    """A database no request returned within SPARE_FIRST_S goes before the spare copy of a busy
    one, as the least recently returned always did: a working set that moved on does not keep
    its old databases open at the expense of the busy one's spares."""
    monkeypatch.setattr(tenant_connections, "SPARE_FIRST_S", 0.0)  # every return is old now
    _older, busy, newest, before = four_idle_for_three_places(settings)

    assert tenant_connections.idle_aliases() == [tenant_alias(t.id) for t in (busy, newest)]
    assert tenant_connections.open_count() == before - 1 == 3  # busy keeps both of its copies
    tenant_connections.close_all()


def descriptors_of(path: Path) -> int:
    """Open descriptors of this process on `path` itself (not its -wal or -shm)."""
    return fd_targets().count(str(path))


@pytest.mark.django_db(transaction=True)  # another thread opens a file: its gate reads the registry
def test_a_closed_copy_keeps_its_slot_while_sqlite_keeps_its_descriptor():
    """SQLite does not close a connection's descriptor while another connection of the process
    holds the same file open (its POSIX locks would go with it): the budget keeps counting it
    until the file's last connection closes, and the next connection to the file reuses it."""
    tenant = tenant_create(slug="copies")
    path = absolute(tenant.database.path)
    touch_all([tenant])  # this thread holds one connection to the file...
    assert in_another_thread(lambda: touch_all([tenant])) is None  # ...another opened a second
    assert tenant_connections.open_count() == 2
    # Two connections, and the read-only descriptor of the file check run before the second
    # opened (SQLite keeps it for the next check, for the same reason).
    held = descriptors_of(path)
    assert held >= 2

    assert tenant_connections._pool.close_oldest()  # close the idle copy
    assert descriptors_of(path) == held  # SQLite kept its descriptor...
    assert tenant_connections.open_count() == 2  # ...and so the budget still counts it

    assert in_another_thread(lambda: touch_all([tenant])) is None  # a new copy reuses it
    assert descriptors_of(path) == held
    assert tenant_connections.open_count() == 2

    tenant_connections.close_all()  # the file's last connections: everything is released
    assert descriptors_of(path) == 0
    assert tenant_connections.open_count() == 0


@pytest.mark.django_db(transaction=True)
def test_a_connection_freed_by_the_garbage_collector_is_counted_like_a_closed_one():
    """A thread that ends without giving its connection back leaves it to the garbage
    collector: its slot follows the same rule as an explicit close (kept while SQLite keeps the
    descriptor, freed with the file's last connection), never given back twice."""
    tenant = tenant_create(slug="collected")
    path = absolute(tenant.database.path)
    touch_all([tenant])  # this thread holds one connection to the file

    def opens_and_ends() -> None:
        touch_all([tenant])  # a second connection, never given back
        connections.close_all()  # the control plane's, as a request's end does

    thread = threading.Thread(target=opens_and_ends)
    thread.start()
    thread.join()
    del thread
    gc.collect()  # the wrapper is in a reference cycle: only a collection frees it
    # One connection of the file open (this thread's), one closed whose descriptor SQLite kept.
    file = os.stat(path)
    assert tenant_connections._deferred._files[(file.st_dev, file.st_ino)] == [1, 1]
    assert tenant_connections.open_count() == 2  # ...and still counted

    tenant_connections.close_all()
    gc.collect()
    assert tenant_connections.open_count() == 0
    assert descriptors_of(path) == 0


def test_a_connection_given_back_serves_the_next_thread_without_opening_the_file():
    tenant = tenant_create(slug="shared")
    alias = f"tenant__{tenant.id}"
    touch_all([tenant])
    raw = connections[alias].connection
    before = tenant_connections.open_count()
    tenant_connections.give_back()
    assert tenant_connections.open_aliases() == []
    assert tenant_connections.idle_aliases() == [alias]
    seen: list[object] = []

    def other_thread() -> None:
        with tenant_context(tenant):
            seen.append(MemoryEntry.objects.count())  # Django's thread check passes
        seen.append(connections[alias].connection)

    assert in_another_thread(other_thread) is None
    assert seen == [0, raw]
    assert tenant_connections.open_count() == before
    assert tenant_connections.idle_aliases() == [alias]
    tenant_connections.close_all()


def test_the_end_of_a_request_gives_its_connections_back(client):
    from tenants.services import api_key_create

    tenant = tenant_create(slug="req")
    key = api_key_create(tenant=tenant)[1]
    response = client.get("/api/v1/memory", headers={"authorization": f"Bearer {key}"})
    assert response.status_code == 200, response.content
    assert tenant_connections.open_aliases() == []
    assert f"tenant__{tenant.id}" in tenant_connections.idle_aliases()
    tenant_connections.close_all()


def test_an_idle_connection_to_a_deleted_file_is_closed_not_handed_out():
    from tenancy.exceptions import DatabaseUnavailable

    tenant, _ = idle_in_the_pool("deleted")
    absolute(tenant.database.path).unlink()
    with tenant_context(tenant), pytest.raises(DatabaseUnavailable, match="deleted"):
        MemoryEntry.objects.count()
    assert tenant_connections.open_aliases() == []
    assert tenant_connections.idle_aliases() == []


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


def test_a_forked_child_starts_with_none_of_the_parents_connections():
    tenant, alias = idle_in_the_pool("forked")
    touch_all([tenant])  # and one borrowed by the forking thread
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child starts with nothing: the parent's connections are never touched
        os.close(read)
        ok = tenant_connections.idle_aliases() == [] and tenant_connections.open_aliases() == []
        ok = ok and tenant_connections.open_count() == 0
        os.write(write, b"1" if ok else b"0")
        os._exit(0)
    os.close(write)
    answer = os.read(read, 1)
    os.close(read)
    os.waitpid(pid, 0)
    assert answer == b"1"
    assert tenant_connections.open_aliases() == [alias]  # the parent's are untouched
    with tenant_context(tenant):
        assert MemoryEntry.objects.count() == 0
    tenant_connections.close_all()


# Another thread opens the database and reads the registry: its rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_a_suspected_database_is_reopened_never_served_by_another_idle_copy():
    """The idle copies of a suspected database stay unverified: after `touch` drops one, the
    request must open the file afresh, not take the next idle copy (which may still hold a
    replaced file, whose writes a restart would never see)."""
    import sqlite3

    from tenancy import faults

    tenant = tenant_create(slug="suspect")
    path = absolute(tenant.database.path)
    touch_all([tenant])  # one connection borrowed here ...
    # ... and another one there: both go back to the pool
    assert in_another_thread(lambda: touch_all([tenant])) is None
    tenant_connections.give_back()
    assert tenant_connections._pool.size == 2
    # Another process suspects the file and replaces it (a consistent copy renamed over it).
    faults.record_fault(tenant.database, faults.Fault.DAMAGED, "suspected elsewhere")
    replace(path)

    with tenant_context(tenant):
        MemoryEntry.objects.create(key="after", value=1, size_bytes=1)
    tenant_connections.close_all()
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT key FROM tenants_memoryentry").fetchall() == [("after",)]


def test_a_copy_given_back_after_its_file_was_replaced_is_closed_not_pooled():
    """`release` (archive, delete) cannot reach a copy another thread holds; when that copy
    comes back, it must not be pooled for the next request."""
    tenant = tenant_create(slug="stale")
    path = absolute(tenant.database.path)
    touch_all([tenant])  # borrowed by this thread, as by a request in flight
    replace(path)
    # Meanwhile another thread releases the alias (as archiving or deleting does).
    assert in_another_thread(lambda: tenant_connections.release(f"tenant__{tenant.id}")) is None
    tenant_connections.give_back()
    assert tenant_connections.idle_aliases() == []
    tenant_connections.close_all()


@pytest.mark.django_db(transaction=True)
def test_a_healed_connection_is_checked_again_when_the_database_is_suspected_again():
    from tenancy import faults

    tenant = tenant_create(slug="healed")
    alias = f"tenant__{tenant.id}"
    marker = faults.marker_path(absolute(tenant.database.path))
    faults.record_fault(tenant.database, faults.Fault.DAMAGED, "suspected")
    touch_all([tenant])  # opened under suspicion: quick_check passed, the fault cleared
    assert not marker.exists()
    healed = connections[alias].connection
    tenant_connections.give_back()

    faults.record_fault(tenant.database, faults.Fault.DAMAGED, "suspected again")
    assert marker.exists()
    touch_all([tenant])
    # Not served by the copy healed before: a new connection, checked again, cleared again.
    assert connections[alias].connection is not healed
    assert not marker.exists()
    tenant_connections.close_all()


def test_an_eager_task_inside_a_request_does_not_give_its_connections_back():
    from celery import shared_task

    @shared_task(name="tests.tenancy.noop")
    def noop() -> int:
        return 1

    tenant = tenant_create(slug="eager")
    touch_all([tenant])  # borrowed by the "request"
    assert noop.apply().get() == 1  # eager, as embedded mode runs tasks: task_postrun fires
    assert tenant_connections.open_aliases() == [f"tenant__{tenant.id}"]
    tenant_connections.give_back()
    tenant_connections.close_all()
