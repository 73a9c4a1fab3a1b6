"""Every run endpoint end to end through gunicorn, as agents call it."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from tests.runs.endpoints import run_endpoints

pytestmark = pytest.mark.processes


class Agent:
    def __init__(self, server, tenant: str):
        self.base = server.base + "/api/v1"
        self.session = requests.Session()
        self.session.headers["Authorization"] = f"Bearer {server.keys[tenant]}"

    def __call__(self, method: str, path: str, **kw) -> requests.Response:
        response = self.session.request(method, self.base + path, timeout=15, **kw)
        assert response.status_code < 500, (method, path, response.status_code, response.text)
        return response


@pytest.fixture
def acme(server) -> Agent:
    return Agent(server, "acme")


@pytest.fixture
def globex(server) -> Agent:
    return Agent(server, "globex")


def expect(response: requests.Response, status: int, code: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    if code is not None:
        assert body["error"]["code"] == code and body["error"]["message"]
    return body


def test_full_run_lifecycle_over_http(acme):
    run = expect(acme("POST", "/runs", json={"metadata": {"agent": "e2e"}}), 201)
    rid = run["id"]
    assert expect(acme("GET", f"/runs/{rid}"), 200)["status"] == "active"
    assert rid in [
        r["id"] for r in expect(acme("GET", "/runs?status=active&limit=200"), 200)["items"]
    ]

    call = expect(
        acme("POST", f"/runs/{rid}/tool-calls", json={"name": "fetch", "args": {"u": 1}}), 201
    )
    assert call["seq"] == 1 and call["status"] == "pending"
    done = expect(acme("PATCH", f"/runs/{rid}/tool-calls/1", json={"result": [1, 2]}), 200)
    assert done["status"] == "succeeded"
    assert expect(acme("GET", f"/runs/{rid}/tool-calls/1"), 200)["result"] == [1, 2]
    assert expect(acme("GET", f"/runs/{rid}/tool-calls?after=0&limit=10"), 200)["next"] is None

    seqs = expect(
        acme("POST", f"/runs/{rid}/events", json={"events": [{"kind": "a"}, {"kind": "b"}]}), 201
    )
    assert seqs == {"seqs": [1, 2]}
    assert [e["kind"] for e in expect(acme("GET", f"/runs/{rid}/events?kind=b"), 200)["items"]] == [
        "b"
    ]

    assert expect(acme("GET", f"/runs/{rid}/state"), 200)["version"] == 0
    put = acme("PUT", f"/runs/{rid}/state", json={"state": {"s": 1}}, headers={"If-Match": "0"})
    assert expect(put, 200)["version"] == 1
    stale = acme("PUT", f"/runs/{rid}/state", json={"state": {"s": 2}}, headers={"If-Match": "0"})
    assert expect(stale, 409, "stale_version")["error"]["current_version"] == 1

    finished = expect(acme("POST", f"/runs/{rid}/complete", json={"status": "succeeded"}), 200)
    assert finished["counts"] == {
        **finished["counts"],
        "tool_calls": 1,
        "events": 2,
        "state_version": 1,
    }
    expect(acme("POST", f"/runs/{rid}/tool-calls", json={"name": "late"}), 409, "run_closed")
    expect(acme("POST", f"/runs/{rid}/events", json={"events": [{"kind": "x"}]}), 409, "run_closed")
    expect(acme("POST", f"/runs/{rid}/complete", json={"status": "failed"}), 409, "run_closed")


def test_idempotent_retry_over_http(acme):
    rid = expect(acme("POST", "/runs", json={}), 201)["id"]
    body = {"name": "charge", "args": {"cents": 500}, "idempotency_key": "order-17"}
    first = expect(acme("POST", f"/runs/{rid}/tool-calls", json=body), 201)
    retry = expect(acme("POST", f"/runs/{rid}/tool-calls", json=body), 200)
    assert retry["seq"] == first["seq"]
    expect(acme("POST", f"/runs/{rid}/tool-calls", json={**body, "args": {"cents": 1}}), 409)


def test_cross_tenant_access_to_every_run_endpoint_is_404(acme, globex):
    rid = expect(acme("POST", "/runs", json={}), 201)["id"]
    acme("POST", f"/runs/{rid}/tool-calls", json={"name": "secret"})
    for method, path, body in run_endpoints(rid):
        expect(globex(method, path, json=body), 404, "not_found")
    call = expect(acme("GET", f"/runs/{rid}/tool-calls/1"), 200)
    assert call["status"] == "pending" and call["name"] == "secret"
    assert expect(acme("GET", f"/runs/{rid}"), 200)["status"] == "active"


def test_bad_input_gets_json_errors(acme):
    rid = expect(acme("POST", "/runs", json={}), 201)["id"]
    headers = {"Content-Type": "application/json"}
    expect(
        acme("POST", f"/runs/{rid}/tool-calls", data=b"{nope", headers=headers), 400, "bad_request"
    )
    expect(
        acme(
            "POST", f"/runs/{rid}/tool-calls", data=b'{"args": NaN, "name": "x"}', headers=headers
        ),
        400,
    )
    expect(acme("POST", f"/runs/{rid}/tool-calls", json={"name": ""}), 422, "invalid")
    # `async` is a field since async tool calls (issue 10); other unknown fields are refused.
    expect(
        acme("POST", f"/runs/{rid}/tool-calls", json={"name": "x", "background": True}),
        422,
        "invalid",
    )
    expect(
        acme("POST", f"/runs/{rid}/tool-calls", json={"name": "x", "async": "yes"}), 422, "invalid"
    )
    expect(
        acme("POST", f"/runs/{rid}/tool-calls", json={"name": "x", "async": True}),
        422,
        "unknown_tool",
    )
    expect(acme("GET", f"/runs/{rid}/tool-calls/0"), 422, "invalid")
    expect(acme("GET", f"/runs/{rid}/tool-calls/99999999999999999999999"), 422, "invalid")
    expect(acme("GET", "/runs/../../etc/passwd"), 404)
    # Under API_MAX_BODY_BYTES (read whole, so the answer always arrives), over TOOL_ARGS_MAX_BYTES.
    huge = {"name": "x", "args": {"blob": "x" * 2_000_000}}
    expect(acme("POST", f"/runs/{rid}/tool-calls", json=huge), 413, "too_large")
    too_many = {"events": [{"kind": "k"}] * 1001}
    expect(acme("POST", f"/runs/{rid}/events", json=too_many), 413, "too_large")


def test_concurrent_writers_get_unique_gapless_seqs(acme):
    rid = expect(acme("POST", "/runs", json={}), 201)["id"]

    def record(i: int) -> int:
        body = {"name": "parallel", "args": {"i": i}}
        return expect(acme("POST", f"/runs/{rid}/tool-calls", json=body), 201)["seq"]

    def events(i: int) -> list[int]:
        body = {"events": [{"kind": "tick", "payload": i}] * 5}
        return expect(acme("POST", f"/runs/{rid}/events", json=body), 201)["seqs"]

    with ThreadPoolExecutor(16) as pool:
        call_seqs = list(pool.map(record, range(120)))
        event_seqs = [s for batch in pool.map(events, range(40)) for s in batch]
    assert sorted(call_seqs) == list(range(1, 121))
    assert sorted(event_seqs) == list(range(1, 201))
    got = expect(acme("GET", f"/runs/{rid}/tool-calls?limit=1000"), 200)["items"]
    assert sorted(c["args"]["i"] for c in got) == list(range(120))
