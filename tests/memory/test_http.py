"""End to end through gunicorn on loopback (the `server` fixture), as an agent would call it."""

import pytest
import requests

pytestmark = pytest.mark.processes


def call(server, method: str, path: str, tenant: str | None = None, key: str | None = None, **kw):
    headers = kw.pop("headers", {})
    if tenant is not None:
        headers["Authorization"] = f"Bearer {server.keys[tenant]}"
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    return requests.request(method, server.base + path, headers=headers, timeout=10, **kw)


def test_healthz_is_open_and_ok(server):
    response = call(server, "GET", "/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok", "checks": {"control_db": "ok", "data_dir": "ok"}}


def test_wrong_key_gets_401_in_the_json_error_shape(server):
    for key in ("adb_nope_nope", "garbage", server.keys["acme"] + "x"):
        response = call(server, "GET", "/api/v1/memory", key=key)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
    assert call(server, "GET", "/api/v1/memory").status_code == 401


def test_two_tenants_memory_never_mix_over_http(server):
    a = call(server, "PUT", "/api/v1/memory/plan/step-1", "acme", json={"value": {"by": "acme"}})
    assert a.status_code in (200, 201)
    assert call(server, "GET", "/api/v1/memory/plan/step-1", "globex").status_code == 404
    listing = call(server, "GET", "/api/v1/memory?prefix=plan/", "globex").json()
    assert listing == {"items": [], "next": None}

    b = call(
        server, "PUT", "/api/v1/memory/plan/step-1", "globex", json={"value": {"by": "globex"}}
    )
    assert b.status_code in (200, 201)
    assert call(server, "GET", "/api/v1/memory/plan/step-1", "acme").json()["value"] == {
        "by": "acme"
    }
    got = call(server, "GET", "/api/v1/memory/plan/step-1", "globex").json()["value"]
    assert got == {"by": "globex"}

    assert call(server, "DELETE", "/api/v1/memory/plan/step-1", "globex").status_code == 204
    assert call(server, "GET", "/api/v1/memory/plan/step-1", "acme").status_code == 200


@pytest.mark.parametrize(
    ("body", "status"),
    [(b"{broken", 400), (b'{"value": 1, "extra": 2}', 422), (b"[]", 422), (b"", 422)],
)
def test_bad_bodies_get_4xx_json_never_500(server, body, status):
    response = call(
        server,
        "PUT",
        "/api/v1/memory/k",
        "acme",
        data=body,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == status, response.text
    assert set(response.json()["error"]) >= {"code", "message"}


def test_body_over_api_max_body_bytes_is_413_before_parsing(server):
    limit = 2 * 1024 * 1024  # API_MAX_BODY_BYTES, as README.md states
    body = b'{"value": "' + b"x" * (limit - 12) + b'"}'
    assert len(body) == limit + 1
    response = call(server, "PUT", "/api/v1/memory/big", "acme", data=body)
    assert response.status_code == 413
    error = response.json()["error"]
    assert error["code"] == "too_large"
    assert error["message"] == f"Request body exceeds {limit} bytes."
    # One byte less is read and parsed: then the value limit speaks, not the body limit.
    response = call(server, "PUT", "/api/v1/memory/big", "acme", data=body[:11] + body[12:])
    assert response.status_code == 413
    assert response.json()["error"]["message"].startswith("Memory value is ")


def test_concurrent_writers_across_threads_keep_tenants_apart(server):
    from concurrent.futures import ThreadPoolExecutor

    def write(i: int) -> int:
        tenant = ("acme", "globex")[i % 2]
        body = {"value": {"tenant": tenant, "i": i}}
        return call(server, "PUT", f"/api/v1/memory/load/{i:03d}", tenant, json=body).status_code

    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(write, range(200)))
    assert set(statuses) == {201}
    for tenant in ("acme", "globex"):
        items, cursor = [], None
        while True:
            page = call(
                server,
                "GET",
                "/api/v1/memory?prefix=load/&limit=200" + (f"&cursor={cursor}" if cursor else ""),
                tenant,
            ).json()
            items += page["items"]
            cursor = page["next"]
            if not cursor:
                break
        assert len(items) == 100
        assert {item["value"]["tenant"] for item in items} == {tenant}
