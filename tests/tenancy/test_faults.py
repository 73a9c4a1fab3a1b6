"""A connection never writes to a file that is not the registered one (decision 0017), and the
open-database cache stays within its per-process budgets (decision 0018)."""

import os
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
from django.db import OperationalError, connections

from memory.models import MemoryEntry
from memory.services import memory_put
from tenancy import connections as tenant_connections
from tenancy import faults
from tenancy.context import tenant_context
from tenancy.exceptions import ConnectionsExhausted, DatabaseUnavailable
from tenancy.paths import absolute, tenant_alias
from tenants.models import Database
from tenants.services import tenant_create
from tests.tenancy.threads import in_another_thread

pytestmark = pytest.mark.django_db


def files_of(path: Path) -> list[Path]:
    return [path.with_name(path.name + suffix) for suffix in ("", "-wal", "-shm")]


def put(tenant, key: str) -> None:
    with tenant_context(tenant):
        memory_put(key=key, value={"k": key})


def keys(tenant) -> set[str]:
    with tenant_context(tenant):
        return set(MemoryEntry.objects.values_list("key", flat=True))


def state_of(tenant) -> str:
    return Database.objects.get(pk=tenant.database_id).state


def raw_connection(tenant):
    return connections[tenant_alias(tenant.id)].connection


def chattr(flag: str, *paths: Path) -> None:
    result = subprocess.run(["chattr", flag, *map(str, paths)], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(
            f"chattr {flag} failed ({result.stderr.strip()}): these tests need root on a "
            "filesystem with immutable attributes (ext4, xfs, btrfs)."
        )


def test_deleted_file_is_not_written_and_is_served_again_once_restored(tmp_path):
    tenant = tenant_create(slug="deleted")
    put(tenant, "before")
    path = absolute(tenant.database.path)
    aside = tmp_path / "aside"
    aside.mkdir()
    for file in files_of(path):
        if file.exists():
            file.rename(aside / file.name)  # deleted, as far as the path is concerned

    with pytest.raises(DatabaseUnavailable, match="deleted while open") as raised:
        put(tenant, "lost")
    assert raised.value.status == 503 and raised.value.extra == {"state": "missing"}
    assert tenant_alias(tenant.id) not in tenant_connections.open_aliases()
    assert state_of(tenant) == "missing"
    assert "deleted" in Database.objects.get(pk=tenant.database_id).last_error
    with pytest.raises(DatabaseUnavailable, match="missing"):  # a new connection: same answer
        put(tenant, "lost-again")
    assert not path.exists()  # never recreated as an empty database

    for file in aside.iterdir():
        file.rename(path.parent / file.name)
    tenant.refresh_from_db()
    put(tenant, "after")
    assert keys(tenant) == {"before", "after"}
    assert state_of(tenant) == "ready"


def test_replaced_file_is_detected_and_the_replacement_is_served_after_a_quick_check():
    tenant = tenant_create(slug="replaced")
    put(tenant, "old")
    path = absolute(tenant.database.path)
    copy = path.with_name("copy.sqlite3")
    with sqlite3.connect(path) as source, sqlite3.connect(copy) as target:
        source.backup(target)
    put(tenant, "only-in-the-old-file")
    old_raw = raw_connection(tenant)
    os.replace(copy, path)
    for file in files_of(path)[1:]:
        file.unlink(missing_ok=True)

    with pytest.raises(DatabaseUnavailable, match="replaced while open"):
        put(tenant, "refused")
    assert state_of(tenant) == "damaged"
    put(tenant, "new")  # opened afresh, quick_check passed
    assert raw_connection(tenant) is not old_raw
    assert keys(tenant) == {"old", "new"}
    assert state_of(tenant) == "ready"


def test_truncated_file_is_never_opened_as_an_empty_database():
    tenant = tenant_create(slug="truncated")
    put(tenant, "a")
    path = absolute(tenant.database.path)
    with sqlite3.connect(path) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    os.truncate(path, 0)

    with pytest.raises(DatabaseUnavailable, match="truncated while open"):
        put(tenant, "b")
    tenant_connections.close_all()
    with pytest.raises(DatabaseUnavailable, match="truncated"):
        put(tenant, "c")
    assert path.stat().st_size == 0
    assert state_of(tenant) == "damaged"


def test_garbage_over_the_header_is_damaged_for_cached_and_new_connections():
    tenant = tenant_create(slug="garbage")
    put(tenant, "a")
    path = absolute(tenant.database.path)
    with path.open("r+b") as file:
        file.write(os.urandom(4096))

    with pytest.raises(DatabaseUnavailable, match="not a SQLite database"):
        put(tenant, "b")
    assert state_of(tenant) == "damaged"
    with pytest.raises(DatabaseUnavailable, match="not a SQLite database"):
        put(tenant, "c")


def test_a_live_file_under_checkpoints_is_never_reported_damaged(tmp_path):
    """The header check reads without locks; a checkpoint writing pages under it must not make
    a healthy database look damaged (it did for ~3% of checks before the locked re-read)."""
    path = tmp_path / "live.sqlite3"
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=50")  # a checkpoint every few commits
    for i in range(20):
        conn.execute(f"CREATE TABLE t{i} (a, b, c)")
    stop = threading.Event()
    commits = 0

    def write() -> None:
        nonlocal commits
        while not stop.is_set():
            conn.execute("BEGIN IMMEDIATE")
            conn.executemany("INSERT INTO t0 (a) VALUES (?)", [("x" * 200,)] * 20)
            conn.execute("COMMIT")
            commits += 1

    writer = threading.Thread(target=write)
    writer.start()
    try:
        verdicts = [faults.check_header(path, path.stat().st_size) for _ in range(3000)]
    finally:
        stop.set()
        writer.join()
        conn.close()
    assert commits > 100  # the checks did race checkpoints
    assert [v for v in verdicts if v is not None] == []


def test_sqlite_errors_are_classified_by_result_code_not_message():
    with sqlite3.connect(":memory:") as conn:
        conn.execute("CREATE TABLE t (x)")
        conn.execute("CREATE TRIGGER t_no BEFORE INSERT ON t BEGIN SELECT RAISE(ABORT, 'x'); END")
        with pytest.raises(sqlite3.IntegrityError) as trigger:
            conn.execute("INSERT INTO t VALUES (1)")
    assert faults.is_trigger_abort(trigger.value)
    garbage = Path(os.devnull)
    with pytest.raises(sqlite3.DatabaseError) as notadb:
        sqlite3.connect(f"file:{garbage}?mode=ro", uri=True).execute("SELECT 1 FROM t")
    wrapped = OperationalError("no such table, locked, full, unable to open")  # text lies
    assert faults.classify(wrapped) is None and not faults.is_busy(wrapped)
    wrapped.__cause__ = notadb.value
    assert faults.classify(wrapped) in (faults.Fault.UNUSABLE, faults.Fault.DAMAGED, None)
    busy = sqlite3.OperationalError("whatever")
    busy.sqlite_errorcode = faults.SQLITE_BUSY  # type: ignore[attr-defined]
    assert faults.is_busy(busy)


def test_connection_that_hit_an_io_error_is_discarded_and_writes_resume_after_the_fault():
    tenant = tenant_create(slug="readonly")
    put(tenant, "a")
    path = absolute(tenant.database.path)
    old_raw = raw_connection(tenant)
    # Not the -shm: SQLite maps it, and writing to an immutable mapping is a SIGBUS.
    chattr("+i", path, path.with_name(path.name + "-wal"))
    try:
        with pytest.raises(OperationalError) as failed:
            put(tenant, "b")
        assert faults.classify(failed.value) is faults.Fault.UNUSABLE
        # A new connection would be read-only for life: it is not opened at all.
        with pytest.raises(DatabaseUnavailable, match="read-only"):
            put(tenant, "c")
    finally:
        chattr("-i", path, path.with_name(path.name + "-wal"))
    put(tenant, "d")
    assert raw_connection(tenant) is not old_raw
    assert keys(tenant) == {"a", "d"}
    assert state_of(tenant) == "ready"  # an I/O fault is not damage


def test_cache_size_is_bounded_per_connection(settings):
    settings.SQLITE_CACHE_KIB = 300
    tenant = tenant_create(slug="pragma")
    put(tenant, "a")
    with connections[tenant_alias(tenant.id)].cursor() as cursor:
        assert cursor.execute("PRAGMA cache_size").fetchone()[0] == -300


MEASURE = """
import json, sys
import django
django.setup()
from django.db import connections
from tenancy.connections import connection_for, open_aliases, worst_case_connection_kib

def rss_kib():
    with open("/proc/self/status") as status:
        return int(next(l for l in status if l.startswith("VmRSS:")).split()[1])

def scan(i, path):
    conn = connection_for(f"tenant__ten_measure{i:04d}", path)
    with conn.cursor() as cursor:
        cursor.execute("SELECT sum(length(value)) FROM tenants_memoryentry")
        assert cursor.fetchone()[0] > 0

from pathlib import Path
paths = [Path(p) for p in sys.argv[1:]]
scan(0, paths[0])  # warm Python's own query path on one database
before = rss_kib()
for i, path in enumerate(paths[1:], start=1):
    scan(i, path)
assert len(open_aliases()) == len(paths)
print(json.dumps({"per_connection_kib": (rss_kib() - before) / (len(paths) - 1),
                  "bound_kib": worst_case_connection_kib()}))
"""


def test_page_cache_memory_per_open_database_stays_within_the_stated_bound(tmp_path):
    """Measure, in a fresh process, what README's worst-case RSS counts per open database."""
    import json
    import sys

    from tests.processes import ROOT, project_env

    template = tenant_create(slug="mem")
    big = tmp_path / "big.sqlite3"
    shutil.copy(absolute(template.database.path), big)
    with sqlite3.connect(big) as conn:  # 4 MiB of memory rows: well past any page cache
        conn.executemany(
            "INSERT INTO tenants_memoryentry (key, value, size_bytes, version, created_at, "
            "updated_at) VALUES (?, ?, 1, 1, '2026-01-01', '2026-01-01')",
            [(f"k{i}", '"' + "x" * 500 + '"') for i in range(8000)],
        )
        conn.commit()
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    paths = []
    for i in range(25):
        paths.append(tmp_path / f"db{i}.sqlite3")
        shutil.copy(big, paths[-1])
    env = project_env(
        tmp_path / "data", SQLITE_CACHE_KIB="256", TENANCY_CONNECTIONS_PER_THREAD="64"
    )
    result = subprocess.run(
        [sys.executable, "-c", MEASURE, *map(str, paths)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["bound_kib"] == 256 + tenant_connections.CONNECTION_OVERHEAD_KIB
    # Fails without `PRAGMA cache_size`: SQLite's default cache is ~2 MiB a connection.
    assert measured["per_connection_kib"] <= measured["bound_kib"], measured
    assert measured["per_connection_kib"] >= 128, measured  # the caches were really filled


def test_process_budget_evicts_the_threads_own_idle_connections(settings):
    settings.TENANCY_MAX_OPEN_DATABASES = 3
    settings.WEB_THREADS = 1
    tenants = [tenant_create(slug=f"b{i}") for i in range(6)]
    base = tenant_connections.open_count()
    for tenant in tenants:
        keys(tenant)
        assert tenant_connections.open_count() - base <= 3
    assert tenant_connections.open_aliases() == [tenant_alias(t.id) for t in tenants[-3:]]


def budget_of_two_taken(settings) -> list:
    """Three tenants, a process budget of two more connections, both taken by this thread
    through the first two tenants."""
    settings.TENANCY_MAX_OPEN_DATABASES = tenant_connections.open_count() + 2
    settings.WEB_THREADS = 1
    tenants = [tenant_create(slug=f"b{i}") for i in range(3)]
    keys(tenants[0])
    keys(tenants[1])
    return tenants


# Another thread reads the registry when it opens a database (tenancy.gate): committed rows, so
# no test transaction may hold the control plane's tables (SQLite's shared in-memory test db).
@pytest.mark.django_db(transaction=True)
def test_process_budget_is_shared_across_threads_and_answers_503_at_the_limit(settings):
    tenants = budget_of_two_taken(settings)  # this thread holds the whole budget
    outcome = [in_another_thread(lambda: keys(tenants[2]))]
    assert isinstance(outcome[0], ConnectionsExhausted)
    assert outcome[0].status == 503

    tenant_connections.close_all()
    outcome.append(in_another_thread(lambda: keys(tenants[2])))
    assert outcome[1] is None
    tenant_connections.close_all()


# As above: another thread opens a database, so the registry's rows must be committed.
@pytest.mark.django_db(transaction=True)
def test_at_the_budget_idle_pooled_connections_are_closed_for_another_thread(settings):
    tenants = budget_of_two_taken(settings)  # the whole budget, then given back: idle
    tenant_connections.give_back()
    assert tenant_connections.idle_aliases() == [tenant_alias(t.id) for t in tenants[:2]]
    outcome = [in_another_thread(lambda: keys(tenants[2]))]
    assert outcome == [None]  # not 503: the least recently returned idle one was closed
    assert tenant_connections.idle_aliases() == [tenant_alias(t.id) for t in tenants[1:]]
    tenant_connections.close_all()


def test_descriptor_budget_follows_rlimit_nofile(settings):
    import resource

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    settings.WEB_THREADS = 8
    settings.TENANCY_MAX_OPEN_DATABASES = 100_000
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, hard))
        # 256 - (32 + 8 x 8 + 256 / 4) = 96 descriptors for databases: 24 of them, 3 a thread.
        assert tenant_connections.max_open_databases() == 24
        assert tenant_connections.per_thread_limit() == 3
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
