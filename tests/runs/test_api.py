"""The runs API in-process: semantics of each endpoint and its errors."""

import sqlite3
from datetime import datetime

import hypothesis
import pydantic_core
import pytest
from django.db import connections, router, transaction
from hypothesis import HealthCheck, given
from hypothesis import strategies as st

from audit.verify import verify_file
from project.api import api as ninja_api
from runs import services
from runs.models import Run, ToolCall
from runs.schemas import ToolCallOut, ToolCallPage
from tenancy.context import run_context
from tenancy.paths import absolute
from tenancy.rows import instance_from_stored, update_stored
from tests.runs.endpoints import run_endpoints

pytestmark = pytest.mark.django_db


def error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == code
    assert body["error"]["message"]
    return body["error"]


def test_create_run_provisions_its_own_database(post, api, tenant):
    created = post("/api/v1/runs", {"metadata": {"agent": "x"}, "labels": ["a", "b:c"]})
    assert created.status_code == 201
    body = created.json()
    assert body["status"] == "active" and body["metadata"] == {"agent": "x"}
    run = Run.objects.get(id=body["id"])
    path = absolute(run.database.path)
    assert path.exists() and run.database.kind == "run"
    assert path.parent.parent.name == tenant.id
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert {"runs_toolcall", "runs_event", "runs_statecheckpoint"} <= tables
    assert not {"tenants_memoryentry", "runs_run", "tenants_tenant"} & tables


def test_tool_call_lifecycle_with_gapless_seqs(post, api, run_id):
    base = f"/api/v1/runs/{run_id}/tool-calls"
    seqs = [post(base, {"name": "search", "args": {"q": i}}).json()["seq"] for i in range(5)]
    assert seqs == [1, 2, 3, 4, 5]
    done = post(
        f"{base}/2",
        {"result": {"hits": 3}, "duration_ms": 12.5, "input_tokens": 10, "cost_usd": 0.01},
        method="patch",
    )
    assert done.status_code == 200
    assert done.json()["status"] == "succeeded" and done.json()["result"] == {"hits": 3}
    failed = post(f"{base}/3", {"error": {"type": "Timeout"}}, method="patch")
    assert failed.json()["status"] == "failed" and failed.json()["error"] == {"type": "Timeout"}
    error(post(f"{base}/2", {"result": 1}, method="patch"), 409, "already_completed")
    error(post(f"{base}/99", {"result": 1}, method="patch"), 404, "not_found")
    error(post(f"{base}/4", {"result": 1, "error": 2}, method="patch"), 422, "invalid")
    error(post(f"{base}/4", {}, method="patch"), 422, "invalid")
    assert post(f"{base}/4", {"result": None}, method="patch").json()["status"] == "succeeded"

    assert api.get(f"{base}/2").json()["result"] == {"hits": 3}
    page = api.get(f"{base}?after=1&limit=2").json()
    assert [c["seq"] for c in page["items"]] == [2, 3] and page["next"] == 3
    rest = api.get(f"{base}?after=3&limit=2").json()
    assert [c["seq"] for c in rest["items"]] == [4, 5] and rest["next"] is None


def test_tool_call_answers_are_the_schema_dump_of_the_stored_row(post, api, run_id):
    """The tool-call endpoints build their body by hand (decision 0058): byte for byte, it must
    be what ninja made of ToolCallOut (the documented schema) validated from the stored row."""
    base = f"/api/v1/runs/{run_id}/tool-calls"
    paid = {"name": "pay", "args": {"amount": 5.5, "to": ["é"]}, "idempotency_key": "k"}
    recorded = post(base, paid)
    post(base, {"name": "search", "args": None})
    untouched = post(base, {"name": "fetch", "args": [1, "x"]})
    completed = post(
        f"{base}/1",
        {
            "result": {"ok": True, "n": 2**40},
            "started_at": "2026-11-30T10:00:00.123456+02:00",
            "duration_ms": 12,
            "input_tokens": 7,
            "output_tokens": 9,
            "cost_usd": 0.25,
        },
        method="patch",
    )
    failed = post(f"{base}/2", {"error": "boom"}, method="patch")
    replay = post(base, paid)
    listed = api.get(base)
    got = {seq: api.get(f"{base}/{seq}") for seq in (1, 2, 3)}

    run = Run.objects.get(id=run_id)
    with run_context(run):
        stored = {c.seq: c for c in ToolCall.objects.all()}
    assert sorted(stored) == [1, 2, 3]

    def rendered(schema) -> bytes:
        return ninja_api.renderer.render(None, schema.model_dump(), response_status=200).encode()

    def expected(seq: int) -> bytes:
        return rendered(ToolCallOut.model_validate(stored[seq], from_attributes=True))

    answers = [recorded, untouched, completed, failed, replay, listed, *got.values()]
    assert [a.status_code for a in answers] == [201, 201, 200, 200, 200, 200, 200, 200, 200]
    assert {a["Content-Type"] for a in answers} == {ninja_api.get_content_type()}
    assert untouched.content == got[3].content == expected(3)
    assert completed.content == replay.content == got[1].content == expected(1)
    assert failed.content == got[2].content == expected(2)
    page = ToolCallPage.model_validate({"items": [stored[s] for s in (1, 2, 3)], "next": None})
    assert listed.content == rendered(page)
    # What the comparison covers: floats stay floats, datetimes read back in UTC, every field.
    assert b'"duration_ms": 12.0' in completed.content and b"+02:00" not in completed.content
    assert list(got[1].json()) == list(ToolCallOut.model_fields)


def test_idempotent_retry_returns_the_same_call(post, run_id):
    base = f"/api/v1/runs/{run_id}/tool-calls"
    body = {"name": "pay", "args": {"amount": 5}, "idempotency_key": "k-1"}
    first = post(base, body)
    again = post(base, body)
    assert first.status_code == 201 and again.status_code == 200
    assert first.json()["seq"] == again.json()["seq"] == 1
    clash = error(post(base, {**body, "args": {"amount": 6}}), 409, "idempotency_mismatch")
    assert clash["seq"] == 1
    assert post(base, {"name": "pay", "args": {}}).json()["seq"] == 2


def test_events_batch_and_filters(post, api, run_id, settings):
    base = f"/api/v1/runs/{run_id}/events"
    batch = [{"kind": "thought" if i % 2 else "action", "payload": {"i": i}} for i in range(6)]
    created = post(base, {"events": batch})
    assert created.status_code == 201 and created.json() == {"seqs": [1, 2, 3, 4, 5, 6]}
    thoughts = api.get(f"{base}?kind=thought").json()["items"]
    assert [e["payload"]["i"] for e in thoughts] == [1, 3, 5]
    page = api.get(f"{base}?after=4").json()
    assert [e["seq"] for e in page["items"]] == [5, 6]
    settings.EVENTS_MAX_BATCH = 3
    error(post(base, {"events": batch}), 413, "too_large")
    error(post(base, {"events": []}), 422, "invalid")


def test_state_checkpoints_with_versions(post, api, run_id):
    base = f"/api/v1/runs/{run_id}/state"
    assert api.get(base).json() == {"version": 0, "state": None, "updated_at": None}
    first = post(base, {"state": {"step": 1}}, method="put", **{"If-Match": "0"})
    assert first.status_code == 200 and first.json()["version"] == 1
    second = post(base, {"state": {"step": 2}, "version": 1}, method="put")
    assert second.json()["version"] == 2
    stale = error(
        post(base, {"state": {"step": 9}, "version": 1}, method="put"), 409, "stale_version"
    )
    assert stale["current_version"] == 2
    error(post(base, {"state": {}}, method="put"), 422, "invalid")
    for malformed in ("abc", "²", "¹", "٣", '"1', "1 2", "-1", "99999999999"):
        error(
            post(base, {"state": {}}, method="put", **{"If-Match": malformed}), 400, "bad_request"
        )
    assert post(base, {"state": 3}, method="put", **{"If-Match": 'W/"2"'}).json()["version"] == 3
    assert api.get(base).json()["state"] == 3


def test_complete_closes_the_run_and_copies_its_summary(post, api, run_id):
    post(f"/api/v1/runs/{run_id}/tool-calls", {"name": "a"})
    post(f"/api/v1/runs/{run_id}/events", {"events": [{"kind": "k"}, {"kind": "k"}]})
    done = post(f"/api/v1/runs/{run_id}/complete", {"status": "succeeded", "summary": "ok"})
    assert done.status_code == 200
    body = done.json()
    assert body["status"] == "succeeded" and body["summary"] == "ok"
    assert body["counts"]["tool_calls"] == 1 and body["counts"]["events"] == 2
    assert body["counts"]["db_bytes"] > 0 and body["duration_s"] >= 0
    for path, data, method in [
        ("tool-calls", {"name": "late"}, "post"),
        ("tool-calls/1", {"result": 1}, "patch"),
        ("events", {"events": [{"kind": "late"}]}, "post"),
        ("state", {"state": 1, "version": 0}, "put"),
        ("complete", {"status": "failed"}, "post"),
    ]:
        error(post(f"/api/v1/runs/{run_id}/{path}", data, method=method), 409, "run_closed")
    run = Run.objects.get(id=run_id)
    assert (run.tool_calls, run.events, run.status) == (1, 2, "succeeded")


def test_write_racing_complete_is_refused_by_the_database(post, tenant, run_id):
    """A writer that loaded the run before `complete` still cannot write after it."""
    from runs import services
    from runs.exceptions import RunClosed

    stale = Run.objects.select_related("database", "tenant").get(id=run_id)
    fresh = Run.objects.select_related("database", "tenant").get(id=run_id)
    services.run_complete(run=fresh, status="failed")
    assert stale.is_active  # what a racing request still believes
    with pytest.raises(RunClosed, match="completed"):
        services.tool_call_record(run=stale, name="late", args={})
    with pytest.raises(RunClosed):
        services.events_append(run=stale, events=[("late", None)])
    with pytest.raises(RunClosed):
        services.state_put(run=stale, state={}, expected_version=0)


def test_list_runs_newest_first_with_cursor_and_status(post, api):
    ids = [post("/api/v1/runs", {}).json()["id"] for _ in range(5)]
    post(f"/api/v1/runs/{ids[0]}/complete", {"status": "failed"})
    seen, cursor = [], None
    while True:
        page = api.get("/api/v1/runs?limit=2" + (f"&cursor={cursor}" if cursor else "")).json()
        seen += [r["id"] for r in page["items"]]
        cursor = page["next"]
        if not cursor:
            break
    assert seen == ids[::-1]
    failed = api.get("/api/v1/runs?status=failed").json()["items"]
    assert [r["id"] for r in failed] == [ids[0]] and failed[0]["counts"]["tool_calls"] == 0
    active = api.get("/api/v1/runs?status=active").json()["items"]
    assert len(active) == 4 and all(r["counts"] is None for r in active)
    error(api.get("/api/v1/runs?status=bogus"), 422, "invalid")
    error(api.get("/api/v1/runs?cursor=notacursor"), 422, "invalid")


def test_get_run_has_live_counts(post, api, run_id):
    post(f"/api/v1/runs/{run_id}/tool-calls", {"name": "a"})
    body = api.get(f"/api/v1/runs/{run_id}").json()
    assert body["counts"]["tool_calls"] == 1 and body["counts"]["db_bytes"] > 0


def test_other_tenants_runs_are_404_on_every_endpoint(post, other_api, run_id):
    import json

    post(f"/api/v1/runs/{run_id}/tool-calls", {"name": "mine"})
    unknown = run_id[:-4] + "zzzz"
    for method, endpoint, data in run_endpoints(run_id):
        path = "/api/v1" + endpoint
        kwargs = {"headers": {"Authorization": f"Bearer {other_api.key}"}}
        if data is not None:
            kwargs.update(data=json.dumps(data), content_type="application/json")
        theirs = getattr(other_api.client, method.lower())(path, **kwargs)
        missing = getattr(other_api.client, method.lower())(path.replace(run_id, unknown), **kwargs)
        assert theirs.status_code == missing.status_code == 404, (method, path)
        assert theirs.json()["error"]["code"] == missing.json()["error"]["code"] == "not_found"
        # Byte for byte the answer for an unknown id, but for the id the client sent itself.
        assert theirs.content.decode().replace(run_id, unknown) == missing.content.decode()
    assert other_api.get("/api/v1/runs").json()["items"] == []


def test_limits_and_validation(post, api, run_id, tenant, settings):
    base = f"/api/v1/runs/{run_id}/tool-calls"
    error(post(base, {"name": "bad name!"}), 422, "invalid")
    error(post(base, {"name": "ok", "extra": 1}), 422, "invalid")
    settings.TOOL_ARGS_MAX_BYTES = 50
    error(post(base, {"name": "ok", "args": {"x": "y" * 100}}), 413, "too_large")
    error(post("/api/v1/runs", {"labels": ["has space"]}), 422, "invalid")
    error(post(f"{base}?after=1", {"name": "ok", "args": 1e999}), 400, "bad_request")

    tenant.max_active_runs = 1
    tenant.save()
    error(post("/api/v1/runs", {}), 429, "too_many_active_runs")


def test_run_database_size_limit_is_413(post, api, tenant):
    tenant.max_run_db_bytes = 200 * 1024
    tenant.save()
    run_id = post("/api/v1/runs", {}).json()["id"]
    base = f"/api/v1/runs/{run_id}/events"
    statuses = set()
    for _ in range(40):
        response = post(base, {"events": [{"kind": "blob", "payload": "x" * 60_000}]})
        statuses.add(response.status_code)
        if response.status_code == 413:
            assert response.json()["error"]["code"] == "run_database_full"
            break
    assert statuses == {201, 413}
    assert api.get(f"/api/v1/runs/{run_id}/events?limit=1").status_code == 200


def test_memoised_run_lookup_never_lets_a_write_in_after_complete(post, api, settings):
    settings.API_LOOKUP_CACHE_SECONDS = 30
    run_id = post("/api/v1/runs", {}).json()["id"]
    assert post(f"/api/v1/runs/{run_id}/tool-calls", {"name": "a"}).status_code == 201
    assert post(f"/api/v1/runs/{run_id}/complete", {"status": "succeeded"}).status_code == 200
    error(post(f"/api/v1/runs/{run_id}/tool-calls", {"name": "b"}), 409, "run_closed")
    assert api.get(f"/api/v1/runs/{run_id}").json()["status"] == "succeeded"
    # Even a memo entry that still says "active" (another process's) cannot write.
    from runs import selectors

    selectors._run_memo.clear()
    stale = Run.objects.select_related("database").get(id=run_id)
    stale.status = Run.Status.ACTIVE
    selectors._run_memo.get_or_load((stale.tenant_id, run_id), lambda: stale)
    error(post(f"/api/v1/runs/{run_id}/events", {"events": [{"kind": "x"}]}), 409, "run_closed")


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=["Cs"])),  # lone surrogates are 400s
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(st.text(st.characters(exclude_categories=["Cs"]), max_size=8), inner)
    ),
    max_leaves=12,
)


@hypothesis.settings(
    max_examples=60, deadline=None, suppress_health_check=list(HealthCheck), database=None
)
@given(payloads=st.lists(json_values, min_size=1, max_size=20))
def test_event_payloads_are_stored_as_sent_and_audited(post, api, run_id, payloads):
    # The batch is inserted by SQLite from the audit entry's JSON (json_each): every payload
    # must come back as sent, its stored text must be the compact JSON, and the trail verify.
    base = f"/api/v1/runs/{run_id}/events"
    created = post(base, {"events": [{"kind": "k", "payload": p} for p in payloads]})
    assert created.status_code == 201, created.content
    seqs = created.json()["seqs"]
    items = api.get(f"{base}?after={seqs[0] - 1}&limit={len(seqs)}").json()["items"]
    assert [e["payload"] for e in items] == payloads
    run = Run.objects.select_related("database").get(pk=run_id)
    path = absolute(run.database.path)
    with sqlite3.connect(path) as conn:
        stored = conn.execute(
            "SELECT payload FROM runs_event WHERE seq >= ? ORDER BY seq", [seqs[0]]
        ).fetchall()
    assert [s for (s,) in stored] == [
        None if p is None else pydantic_core.to_json(p).decode() for p in payloads
    ]
    assert verify_file(path).ok


def test_update_stored_returns_the_row_as_select_reads_it(run_id):
    # Claim and settle audit the row UPDATE ... RETURNING gives back: it must encode exactly as
    # the row SELECT * reads (a whole REAL comes back from RETURNING as an integer).
    run = Run.objects.select_related("tenant", "database").get(pk=run_id)
    with run_context(run):
        call, _ = services.tool_call_record(run=run, name="t", args={"a": 1})
        alias = router.db_for_write(ToolCall)
        with transaction.atomic(using=alias):
            row = update_stored(
                ToolCall,
                using=alias,
                where='"seq" = ?',
                params=[call.seq],
                status="succeeded",
                duration_ms=12.0,
                cost_usd=2.0,
            )
            with connections[alias].cursor() as cursor:
                cursor.execute("SELECT * FROM runs_toolcall WHERE seq = %s", [call.seq])
                names = [column[0] for column in cursor.description]
                values = [str(v) if isinstance(v, datetime) else v for v in cursor.fetchone()]
        selected = dict(zip(names, values, strict=True))
        assert pydantic_core.to_json(row) == pydantic_core.to_json(selected)
        loaded = instance_from_stored(ToolCall, using=alias, row=row)
        assert loaded.duration_ms == 12.0 and type(loaded.duration_ms) is float
        assert loaded.args == {"a": 1} and loaded.created_at == ToolCall.objects.get().created_at


@pytest.mark.parametrize(
    "values",
    [
        {"created_at": "utc-now", "args": {"q": "café ☕", "n": 1.5, "l": [1, True, None]}},
        {"created_at": "ist", "args": ["a", 2], "duration_ms": 3, "input_tokens": 7},
        {"created_at": "utc-now", "args": None, "cost_usd": 0.25, "attempts": 2},
        {"created_at": "utc-now", "args": "text", "status": "queued", "completed_at": "ist"},
    ],
)
def test_insert_stored_stores_what_the_orm_stores(run_id, values):
    """The raw insert short-cuts Django's per-field conversions for plain values (text, numbers,
    JSON, UTC datetimes): every column must read back as the ORM's own insert of the same
    values."""
    import zoneinfo

    from django.utils import timezone

    from tenancy.rows import insert_stored

    times = {
        "utc-now": timezone.now(),
        "ist": datetime(2026, 3, 1, 9, 30, 15, 123456, tzinfo=zoneinfo.ZoneInfo("Asia/Kolkata")),
    }
    given = {k: times.get(v, v) if isinstance(v, str) else v for k, v in values.items()}
    given.update(name="search", digest="d" * 64)
    run = Run.objects.select_related("tenant", "database").get(pk=run_id)
    with run_context(run):
        alias = router.db_for_write(ToolCall)
        with transaction.atomic(using=alias):
            raw_seq = insert_stored(ToolCall, using=alias, **given)["seq"]
        orm_seq = ToolCall.objects.create(**given).seq
        rows = {}
        for seq in (raw_seq, orm_seq):  # the stored values (datetimes as text), not parsed
            cursor = connections[alias].connection.execute(
                "SELECT * FROM runs_toolcall WHERE seq = ?", [seq]
            )
            names = [c[0] for c in cursor.description]
            rows[seq] = dict(zip(names, cursor.fetchone(), strict=True))
    stored, expected = rows[raw_seq], rows[orm_seq]
    stored.pop("seq"), expected.pop("seq")
    assert stored == expected


def test_fetch_one_builds_the_instance_the_orm_loads_whatever_the_column_order(run_id):
    from django.utils import timezone

    from tenancy.rows import fetch_one

    run = Run.objects.select_related("tenant", "database").get(pk=run_id)
    with run_context(run):
        call, _ = services.tool_call_record(run=run, name="t", args={"a": [1, 2.5, None]})
        ToolCall.objects.filter(seq=call.seq).update(
            status="succeeded", completed_at=timezone.now(), duration_ms=3.0, cost_usd=0.5
        )
        loaded = ToolCall.objects.get(seq=call.seq)
        columns = [f.column for f in ToolCall._meta.concrete_fields]
        fields = [f.attname for f in ToolCall._meta.concrete_fields]
        for order in (columns, columns[::-1]):  # `Model.from_db` takes the model's field order
            sql = f"SELECT {', '.join(order)} FROM runs_toolcall WHERE seq = %s"
            fetched = fetch_one(ToolCall, sql, [call.seq])
            assert [getattr(fetched, f) for f in fields] == [getattr(loaded, f) for f in fields]
            assert fetched._state.db == loaded._state.db and not fetched._state.adding
        assert fetch_one(ToolCall, "SELECT * FROM runs_toolcall WHERE seq = %s", [-1]) is None
