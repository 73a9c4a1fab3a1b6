"""The tool registry, `sql.query`, the tenant KV, validation of async calls (in process), and
async calls in embedded mode (the session's gunicorn without REDIS_URL: the thread pool)."""

import time

import pytest
import requests

from runs.schemas import ToolCallOut
from tests.processes import manage
from tools.exceptions import SqlNotAllowed
from tools.registry import ToolContext, registry


def _sql(tenant, sql: str, **extra):
    from tenancy.context import tenant_context

    ctx = ToolContext(tenant=tenant, run=None, seq=1, attempt=1, deadline=time.monotonic() + 5)
    with tenant_context(tenant):
        return registry.get("sql.query").function({"sql": sql, **extra}, ctx)


@pytest.mark.django_db
def test_sql_query_reads_the_tenant_database_with_a_row_limit(tenant, settings):
    from memory.services import memory_put
    from tenancy.context import tenant_context

    with tenant_context(tenant):
        for i in range(5):
            memory_put(key=f"k{i}", value=i)
    out = _sql(tenant, "SELECT key FROM tenants_memoryentry ORDER BY key", limit=3)
    assert out == {"columns": ["key"], "rows": [["k0"], ["k1"], ["k2"]], "truncated": True}
    columns = _sql(tenant, "PRAGMA table_info(tenants_memoryentry)")  # introspection is a read
    assert "key" in [row[1] for row in columns["rows"]]
    settings.SQL_QUERY_MAX_ROWS = 2
    assert len(_sql(tenant, "SELECT key FROM tenants_memoryentry")["rows"]) == 2


@pytest.mark.django_db
def test_sql_query_reads_a_wal_database_whose_wal_and_shm_are_gone(tenant):
    from memory.services import memory_put
    from tenancy import connections as tenant_connections
    from tenancy.context import tenant_context
    from tenancy.paths import absolute

    with tenant_context(tenant):
        memory_put(key="k", value=1)
    tenant_connections.close_all()  # the last connection checkpoints and removes -wal and -shm
    path = absolute(tenant.database.path)
    assert not path.with_name(path.name + "-shm").exists()
    assert _sql(tenant, "SELECT key FROM tenants_memoryentry")["rows"] == [["k"]]


@pytest.mark.django_db
@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM tenants_memoryentry",
        "INSERT INTO tenants_memoryentry (key, value, version, size_bytes, created_at, "
        "updated_at) VALUES ('x', '1', 1, 1, '', '')",
        "UPDATE tenants_memoryentry SET version = 9",
        "CREATE TABLE evil (x)",
        "DROP TABLE tenants_memoryentry",
        "ATTACH DATABASE '/tmp/other.sqlite3' AS other",
        "PRAGMA journal_mode = DELETE",
        "PRAGMA user_version = 7",
        "BEGIN",
        "SELECT 1; DELETE FROM tenants_memoryentry",
        "WITH x AS (SELECT 1) DELETE FROM tenants_memoryentry",
    ],
)
def test_sql_query_refuses_writes_attach_and_pragma_writes(tenant, sql):
    from memory.services import memory_put
    from tenancy.context import tenant_context

    with tenant_context(tenant):
        memory_put(key="kept", value=1)
    with pytest.raises(SqlNotAllowed):
        _sql(tenant, sql)
    assert _sql(tenant, "SELECT key, version FROM tenants_memoryentry")["rows"] == [["kept", 1]]


def test_registered_tools_are_listed_and_the_listing_follows_the_registry(api, redis_url):
    names = [t["name"] for t in api.get("/api/v1/tools").json()["items"]]
    assert {"echo", "sleep", "memory.get", "memory.put", "sql.query"} <= set(names)
    sql = next(t for t in api.get("/api/v1/tools").json()["items"] if t["name"] == "sql.query")
    assert sql["args_schema"]["required"] == ["sql"]

    registry.register("test.added", lambda args, ctx: args, description="Added by a test.")
    try:
        listed = {t["name"]: t for t in api.get("/api/v1/tools").json()["items"]}
        assert listed["test.added"]["description"] == "Added by a test."
    finally:
        registry.unregister("test.added")
    assert "test.added" not in {t["name"] for t in api.get("/api/v1/tools").json()["items"]}


def test_async_call_args_are_checked_against_the_tools_schema(post, run_id):
    response = post(
        f"/api/v1/runs/{run_id}/tool-calls",
        {"name": "sleep", "args": {"seconds": "long"}, "async": True},
    )
    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_args"
    assert response.json()["error"]["details"][0]["loc"] == ["body", "args", "seconds"]
    unknown = post(f"/api/v1/runs/{run_id}/tool-calls", {"name": "nope", "args": {}, "async": True})
    assert unknown.status_code == 422 and unknown.json()["error"]["code"] == "unknown_tool"


def test_wait_above_the_maximum_is_refused(api, post, run_id, settings):
    call = post(f"/api/v1/runs/{run_id}/tool-calls", {"name": "x", "args": {}}).json()
    response = api.get(f"/api/v1/runs/{run_id}/tool-calls/{call['seq']}?wait=31")
    assert response.status_code == 422
    pending = api.get(f"/api/v1/runs/{run_id}/tool-calls/{call['seq']}?wait=0.1").json()
    assert pending["status"] == "pending"  # a synchronous call: nothing to wait for
    cancel = post(f"/api/v1/runs/{run_id}/tool-calls/{call['seq']}/cancel")
    assert cancel.status_code == 409 and cancel.json()["error"]["code"] == "not_cancellable"


def test_kv_keys_of_two_tenants_never_collide(api, other_api, redis_url):
    assert (
        api.put("/api/v1/kv/prompts/greeting", {"value": "hello", "ttl_s": 60}).status_code == 200
    )
    assert other_api.put("/api/v1/kv/prompts/greeting", {"value": "hola"}).status_code == 200
    assert api.get("/api/v1/kv/prompts/greeting").json()["value"] == "hello"
    assert other_api.get("/api/v1/kv/prompts/greeting").json()["value"] == "hola"
    assert api.put("/api/v1/kv/only-acme", {"value": 1}).status_code == 200
    assert other_api.get("/api/v1/kv/only-acme").status_code == 404
    # A key spelling another tenant's cache key reaches nothing of that tenant.
    from kv.cache import tenant_key
    from tenants.models import Tenant

    acme = Tenant.objects.get(slug="acme")
    spelled = tenant_key(acme, "kv", "only-acme")
    assert other_api.get(f"/api/v1/kv/{spelled}").status_code in (404, 422)
    assert other_api.delete("/api/v1/kv/only-acme").status_code == 404
    assert api.get("/api/v1/kv/only-acme").status_code == 200


def test_kv_ttl_bounds_and_expiry(api, redis_url, settings):
    too_long = api.put("/api/v1/kv/k", {"value": 1, "ttl_s": settings.KV_MAX_TTL_S + 1})
    assert too_long.status_code == 422
    assert api.put("/api/v1/kv/k", {"value": 1, "ttl_s": 1}).status_code == 200
    deadline = time.monotonic() + 10
    while api.get("/api/v1/kv/k").status_code == 200:
        assert time.monotonic() < deadline, "a 1 s TTL did not expire"
        time.sleep(0.2)


# --- Embedded mode: the session's gunicorn runs without REDIS_URL --------------------------------


@pytest.mark.processes
def test_embedded_async_call_runs_on_the_in_process_pool(server):
    headers = {"Authorization": f"Bearer {server.keys['acme']}"}
    api = f"{server.base}/api/v1"
    run = requests.post(f"{api}/runs", json={}, headers=headers, timeout=10).json()["id"]
    queued = requests.post(
        f"{api}/runs/{run}/tool-calls",
        json={"name": "echo", "args": {"hello": "world"}, "async": True},
        headers=headers,
        timeout=10,
    )
    assert queued.status_code == 202 and queued.json()["status"] == "queued"
    assert list(queued.json()) == list(ToolCallOut.model_fields)  # built by hand: decision 0058
    seq = queued.json()["seq"]
    call = requests.get(
        f"{api}/runs/{run}/tool-calls/{seq}", params={"wait": 10}, headers=headers, timeout=20
    ).json()
    assert call["status"] == "succeeded" and call["result"] == {"hello": "world"}

    slow = requests.post(
        f"{api}/runs/{run}/tool-calls",
        json={"name": "sleep", "args": {"seconds": 30}, "async": True},
        headers=headers,
        timeout=10,
    ).json()["seq"]
    deadline = time.monotonic() + 10
    while True:
        state = requests.get(f"{api}/runs/{run}/tool-calls/{slow}", headers=headers, timeout=10)
        if state.json()["status"] == "running" or time.monotonic() > deadline:
            break
        time.sleep(0.02)  # polling interval
    assert state.json()["status"] == "running"
    cancelled = requests.post(
        f"{api}/runs/{run}/tool-calls/{slow}/cancel", headers=headers, timeout=10
    )
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert list(cancelled.json()) == list(ToolCallOut.model_fields)
    # Every transition (queued, running, succeeded, cancelled) is in the run's audit trail.
    verified = manage(server.env, "verify_run", run, check=False)
    assert verified.returncode == 0 and "OK" in verified.stdout, verified.stdout + verified.stderr
