"""Hostile input in-process, through Django's full middleware stack: strict JSON, strict types,
JSON answers on every path and method, and list pages bounded in bytes."""

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from runs.models import Event, Run, ToolCall
from tenancy.context import run_context

pytestmark = pytest.mark.django_db

METHODS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE"]


def assert_json_error(response, status: int | None = None, code: str | None = None) -> dict:
    assert response["Content-Type"].startswith("application/json"), response.content[:300]
    if status is not None:
        assert response.status_code == status, response.content[:300]
    body = response.json()
    assert set(body) == {"error"} and isinstance(body["error"]["message"], str)
    assert isinstance(body["error"]["code"], str) and body["error"]["message"]
    if code is not None:
        assert body["error"]["code"] == code, body
    return body["error"]


def send(client, key: str, method: str, path: str, body: bytes | str = b"", **headers):
    return client.generic(
        method,
        path,
        body,
        content_type=headers.pop("content_type", "application/json"),
        headers={"Authorization": f"Bearer {key}", **headers},
    )


@pytest.fixture
def run_id(api) -> str:
    response = send(api.client, api.key, "POST", "/api/v1/runs", b"{}")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def body_endpoints(run_id: str) -> list[tuple[str, str]]:
    base = f"/api/v1/runs/{run_id}"
    return [
        ("POST", "/api/v1/runs"),
        ("POST", f"{base}/tool-calls"),
        ("PATCH", f"{base}/tool-calls/1"),
        ("POST", f"{base}/events"),
        ("PUT", f"{base}/state"),
        ("POST", f"{base}/complete"),
        ("PUT", "/api/v1/memory/k"),
    ]


# --- Strategies: JSON texts that are not strict JSON, inside bodies that otherwise fit ----------
surrogate = st.integers(0xD800, 0xDFFF).map(lambda cp: f'"\\u{cp:04x}"')
# Two high surrogates in a row are not a pair either.
surrogate_pairless = st.integers(0xD800, 0xDBFF).map(lambda cp: f'"\\u{cp:04x}\\u{cp:04x}"')
overflow = st.one_of(
    st.tuples(st.sampled_from(["", "-"]), st.integers(309, 10**6)).map(lambda t: f"{t[0]}1e{t[1]}"),
    st.integers(309, 2000).map(lambda n: "9" * n + ".5"),
    st.sampled_from(["1E400", "-1e999", "0.5e+99999", "123456789e305"]),
)
non_finite = st.sampled_from(["NaN", "Infinity", "-Infinity", "nan", "inf"])
deep = st.integers(201, 3000).flatmap(
    lambda depth: st.sampled_from(["[" * depth + "]" * depth, '{"a":' * depth + "1" + "}" * depth])
)
huge_int = st.integers(4301, 20_000).map(lambda n: "1" * n)
hostile_value = st.one_of(surrogate, surrogate_pairless, overflow, non_finite, deep, huge_int)


def envelopes(value: str) -> list[str]:
    """Bodies that each endpoint would take with a plain value in place of `value`."""
    return [
        value,
        f'{{"value": {value}}}',
        f'{{"metadata": {{"k": {value}}}}}',
        f'{{"metadata": {{{value}: 1}}}}' if value.startswith('"') else f'{{"value": [{value}]}}',
        f'{{"name": "x", "args": {value}}}',
        f'{{"result": {value}}}',
        f'{{"events": [{{"kind": "k", "payload": {value}}}]}}',
        f'{{"state": {value}, "version": 0}}',
        f'{{"status": "failed", "summary": {value}}}',
    ]


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck), database=None)
@given(data=st.data())
def test_non_strict_json_is_400_on_every_body_endpoint_and_stores_nothing(api, run_id, data):
    value = data.draw(hostile_value, label="value")
    body = data.draw(st.sampled_from(envelopes(value)), label="body")
    method, path = data.draw(st.sampled_from(body_endpoints(run_id)), label="endpoint")
    response = send(api.client, api.key, method, path, body.encode())
    assert_json_error(response, 400, "bad_request")
    run = Run.objects.get(id=run_id)
    assert run.status == "active"
    with run_context(run):
        assert not ToolCall.objects.exists() and not Event.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        b'"\\udfff"',
        b'{"value": {"\\udfff": 1}}',
        b'{"value": "\\ud800x"}',
        b'{"value": 1e400}',
        b'{"value": -1e999}',
        b'{"value": NaN}',
        b'{"value": "\xed\xb3\xbf"}',  # a surrogate encoded as (invalid) UTF-8
        b'{"value": "\xff"}',
        b"\xef\xbb\xbf{}",
    ],
)
def test_each_hostile_class_is_400_naming_the_problem(api, body):
    response = send(api.client, api.key, "PUT", "/api/v1/memory/k", body)
    error = assert_json_error(response, 400, "bad_request")
    assert "JSON" in error["message"] or "64-bit float" in error["message"]
    assert api.get("/api/v1/memory").json()["items"] == []


def test_large_but_finite_numbers_and_surrogate_pairs_are_kept(api):
    body = b'{"value": [1.7e308, -1e-400, 123456789012345678901234567890, "\\ud83d\\ude00"]}'
    assert send(api.client, api.key, "PUT", "/api/v1/memory/k", body).status_code == 201
    assert api.get("/api/v1/memory/k").json()["value"] == [
        1.7e308,
        -0.0,
        123456789012345678901234567890,
        "\U0001f600",
    ]


@pytest.mark.parametrize(
    ("path", "body", "loc"),
    [
        ("state", {"state": 1, "version": "0"}, ["body", "version"]),
        ("state", {"state": 1, "version": True}, ["body", "version"]),
        ("state", {"state": 1, "version": 0.0}, ["body", "version"]),
        ("tool-calls", {"name": 5}, ["body", "name"]),
        ("tool-calls", {"name": "x", "idempotency_key": 1}, ["body", "idempotency_key"]),
        ("tool-calls/1", {"result": 1, "input_tokens": "3"}, ["body", "input_tokens"]),
        ("tool-calls/1", {"result": 1, "input_tokens": False}, ["body", "input_tokens"]),
        ("tool-calls/1", {"result": 1, "cost_usd": "0.5"}, ["body", "cost_usd"]),
        ("tool-calls/1", {"result": 1, "duration_ms": True}, ["body", "duration_ms"]),
        ("tool-calls/1", {"result": 1, "started_at": 1700000000}, ["body", "started_at"]),
        ("events", {"events": [{"kind": 1}]}, ["body", "events", 0, "kind"]),
        ("events", {"events": {"kind": "k"}}, ["body", "events"]),
        ("complete", {"status": 1}, ["body", "status"]),
        (None, {"labels": "a"}, ["body", "labels"]),
        (None, {"metadata": []}, ["body", "metadata"]),
    ],
)
def test_types_are_not_coerced_and_errors_name_the_field(api, run_id, path, body, loc):
    send(api.client, api.key, "POST", f"/api/v1/runs/{run_id}/tool-calls", b'{"name": "x"}')
    url = "/api/v1/runs" if path is None else f"/api/v1/runs/{run_id}/{path}"
    method = {"state": "PUT", "tool-calls/1": "PATCH"}.get(path or "", "POST")
    response = send(api.client, api.key, method, url, json.dumps(body))
    error = assert_json_error(response, 422, "invalid")
    assert error["details"][0]["loc"] == loc, error
    assert error["message"].startswith(".".join(map(str, loc)) + ":"), error["message"]


def test_a_missing_body_is_located_at_body(api, run_id):
    response = send(api.client, api.key, "POST", f"/api/v1/runs/{run_id}/tool-calls", b"")
    error = assert_json_error(response, 422, "invalid")
    assert error["details"][0]["loc"] == ["body"]


def test_an_aware_iso_datetime_string_is_still_accepted(api, run_id):
    send(api.client, api.key, "POST", f"/api/v1/runs/{run_id}/tool-calls", b'{"name": "x"}')
    body = {"result": 1, "started_at": "2026-01-02T03:04:05Z", "duration_ms": 3}
    response = send(
        api.client, api.key, "PATCH", f"/api/v1/runs/{run_id}/tool-calls/1", json.dumps(body)
    )
    assert response.status_code == 200, response.content
    assert response.json()["started_at"].startswith("2026-01-02T03:04:05")


def test_a_cursor_carrying_a_lone_surrogate_is_422_not_500(api):
    import base64

    raw = base64.urlsafe_b64encode(b'["2026-01-01T00:00:00+00:00", "\\udfff"]').decode()
    assert_json_error(api.get(f"/api/v1/runs?cursor={raw}"), 422, "invalid")
    raw = base64.urlsafe_b64encode(b'"\\udfff"').decode()
    assert_json_error(api.get(f"/api/v1/memory?cursor={raw}"), 422, "invalid")


# --- Every path, every method -------------------------------------------------------------------
def api_paths(run_id: str) -> list[str]:
    base = f"/api/v1/runs/{run_id}"
    return [
        "/api/v1/runs",
        base,
        f"{base}/tool-calls",
        f"{base}/tool-calls/1",
        f"{base}/events",
        f"{base}/state",
        f"{base}/complete",
        "/api/v1/memory",
        "/api/v1/memory/some/key",
        "/api/v1/nothing",
        "/api/nothing",
        "/api/",
        "/api/v2/runs",
    ]


def test_every_method_on_every_api_path_answers_json(api, run_id):
    for path in api_paths(run_id):
        for method in METHODS:
            response = send(api.client, api.key, method, path, b"{}")
            assert response.status_code < 500, (method, path, response.content)
            if method == "HEAD":
                assert response.content == b""
                assert response["Content-Type"].startswith("application/json"), (path, response)
            elif response.status_code >= 400:
                assert_json_error(response)


def test_wrong_methods_are_json_405_listing_the_allowed_ones(api):
    for method in ("DELETE", "PATCH", "OPTIONS", "TRACE", "PUT"):
        response = send(api.client, api.key, method, "/api/v1/runs")
        error = assert_json_error(response, 405, "method_not_allowed")
        assert response["Allow"] == "GET, HEAD, POST"
        assert method in error["message"]


def test_head_answers_like_get_without_a_body(api, run_id):
    get = api.get(f"/api/v1/runs/{run_id}")
    head = api.client.head(f"/api/v1/runs/{run_id}", headers={"Authorization": f"Bearer {api.key}"})
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head["Content-Type"] == get["Content-Type"]
    missing = api.client.head("/api/v1/runs/run_nope", headers={"Authorization": "Bearer x"})
    assert missing.status_code == 401 and missing["Content-Type"] == "application/json"


def test_a_bad_host_header_is_json_400_under_the_api_only(api, client):
    response = client.get("/api/v1/runs", HTTP_HOST="evil.example")
    error = assert_json_error(response, 400, "bad_request")
    assert "ALLOWED_HOSTS" in error["message"]
    assert client.get("/admin/", HTTP_HOST="evil.example")["Content-Type"].startswith("text/html")


# --- Pages bounded in bytes ---------------------------------------------------------------------
def walk(api, url: str, param: str) -> tuple[list[dict], list[int]]:
    items, sizes, token = [], [], None
    while True:
        sep = "&" if "?" in url else "?"
        response = api.get(url + (f"{sep}{param}={token}" if token is not None else ""))
        assert response.status_code == 200, response.content
        page = response.json()
        items += page["items"]
        sizes.append(len(response.content))
        token = page["next"]
        if token is None:
            return items, sizes


def test_tool_call_and_event_pages_stop_at_the_byte_budget(api, run_id, settings):
    base = f"/api/v1/runs/{run_id}"
    for i in range(12):
        body = {"name": "big", "args": {"i": i, "blob": "é" * 3000}}  # 6 bytes each on the wire
        response = send(api.client, api.key, "POST", f"{base}/tool-calls", json.dumps(body))
        assert response.status_code == 201
    events = {"events": [{"kind": "k", "payload": "x" * 9000} for _ in range(12)]}
    response = send(api.client, api.key, "POST", f"{base}/events", json.dumps(events))
    assert response.status_code == 201

    settings.API_MAX_PAGE_BYTES = 50_000
    calls, call_pages = walk(api, f"{base}/tool-calls?limit=1000", "after")
    assert [c["args"]["i"] for c in calls] == list(range(12))  # every item once, in order
    assert len(call_pages) == 6 and max(call_pages) <= 50_000
    got, event_pages = walk(api, f"{base}/events?limit=1000&after=0", "after")
    assert [e["seq"] for e in got] == list(range(1, 13))
    assert len(event_pages) == 3 and max(event_pages) <= 50_000

    settings.API_MAX_PAGE_BYTES = 10  # smaller than any item: one item a page, never none
    one_each, pages = walk(api, f"{base}/tool-calls?limit=1000", "after")
    assert len(one_each) == len(pages) == 12

    # Event payloads are stored as UTF-8 (2 bytes for "é") but answered escaped (6 bytes).
    settings.API_MAX_PAGE_BYTES = 1 << 20
    events = {"events": [{"kind": "u", "payload": "é" * 3000} for _ in range(12)]}
    response = send(api.client, api.key, "POST", f"{base}/events", json.dumps(events))
    assert response.status_code == 201
    settings.API_MAX_PAGE_BYTES = 50_000
    got, event_pages = walk(api, f"{base}/events?limit=1000&after=12", "after")
    assert [e["payload"] for e in got] == ["é" * 3000] * 12
    assert len(event_pages) >= 5 and max(event_pages) <= 50_000


def test_memory_and_run_pages_stop_at_the_byte_budget(api, settings):
    for i in range(10):
        assert api.put(f"/api/v1/memory/k{i}", {"value": "v" * 20_000}).status_code == 201
        body = json.dumps({"metadata": {"blob": "m" * 10_000, "i": i}})
        assert send(api.client, api.key, "POST", "/api/v1/runs", body).status_code == 201
    settings.API_MAX_PAGE_BYTES = 45_000
    entries, memory_pages = walk(api, "/api/v1/memory?limit=200", "cursor")
    assert [e["key"] for e in entries] == [f"k{i}" for i in range(10)]
    assert len(memory_pages) == 5 and max(memory_pages) <= 45_000
    runs, run_pages = walk(api, "/api/v1/runs?limit=200", "cursor")
    assert [r["metadata"]["i"] for r in runs] == list(range(9, -1, -1))
    assert len(run_pages) == 3 and max(run_pages) <= 45_000


def test_openapi_lists_every_limit_and_error_code(client, settings):
    settings.TOOL_RESULT_MAX_BYTES = 12_345
    info = client.get("/api/openapi.json").json()["info"]
    limits = info["x-limits"]
    for name in (
        "API_MAX_BODY_BYTES",
        "API_MAX_PAGE_BYTES",
        "API_MAX_REQUEST_LINE",
        "TOOL_RESULT_MAX_BYTES",
        "TENANT_MAX_ACTIVE_RUNS",
        "RUN_MAX_DB_BYTES",
        "MEMORY_MAX_VALUE_BYTES",
        "EVENTS_MAX_BATCH",
    ):
        assert name in limits and name in info["description"]
    assert limits["TOOL_RESULT_MAX_BYTES"]["value"] == 12_345
    assert limits["API_MAX_BODY_BYTES"]["value"] == settings.DATA_UPLOAD_MAX_MEMORY_SIZE
    codes = info["x-error-codes"]
    for code, status in {
        "too_many_active_runs": 429,
        "run_database_full": 413,
        "too_large": 413,
        "method_not_allowed": 405,
        "bad_request": 400,
        "uri_too_long": 414,
        "stale_version": 409,
    }.items():
        assert codes[code]["status"] == status and f"`{code}`" in info["description"]
