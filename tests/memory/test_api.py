"""The memory API and error contract, in-process through Django's full middleware stack."""

import pytest

from tenants.models import Database
from tenants.services import api_key_revoke

pytestmark = pytest.mark.django_db


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.content
    assert response["Content-Type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == code
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


def test_put_get_replace_delete_roundtrip(api):
    created = api.put("/api/v1/memory/prefs/theme", {"value": {"mode": "dark", "n": [1, 2]}})
    assert created.status_code == 201
    assert created.json()["version"] == 1
    assert created.json()["value"] == {"mode": "dark", "n": [1, 2]}

    replaced = api.put("/api/v1/memory/prefs/theme", {"value": "light"})
    assert replaced.status_code == 200
    assert replaced.json()["version"] == 2

    got = api.get("/api/v1/memory/prefs/theme")
    assert got.status_code == 200
    assert got.json()["value"] == "light"
    assert got.json()["size_bytes"] == len('"light"')

    assert api.delete("/api/v1/memory/prefs/theme").status_code == 204
    assert_error(api.get("/api/v1/memory/prefs/theme"), 404, "not_found")
    assert_error(api.delete("/api/v1/memory/prefs/theme"), 404, "not_found")


@pytest.mark.parametrize("value", [None, 0, "", [], {}, 1.5, True])
def test_any_json_value_is_kept(api, value):
    assert api.put("/api/v1/memory/v", {"value": value}).status_code == 201
    assert api.get("/api/v1/memory/v").json()["value"] == value


def test_list_by_prefix_with_cursor_pages(api):
    keys = [f"notes/{i:02d}" for i in range(7)] + ["other/x", "Notes/upper"]
    for key in keys:
        assert api.put(f"/api/v1/memory/{key}", {"value": key}).status_code == 201
    seen, cursor = [], None
    while True:
        url = "/api/v1/memory?prefix=notes/&limit=3" + (f"&cursor={cursor}" if cursor else "")
        page = api.get(url).json()
        assert len(page["items"]) <= 3
        seen += [item["key"] for item in page["items"]]
        cursor = page["next"]
        if cursor is None:
            break
    assert seen == [f"notes/{i:02d}" for i in range(7)]  # case-sensitive, ordered, no repeats
    everything = api.get("/api/v1/memory?limit=200").json()
    assert len(everything["items"]) == 9 and everything["next"] is None


def test_missing_wrong_and_revoked_keys_get_401(api, client):
    assert_error(client.get("/api/v1/memory"), 401, "unauthorized")
    wrong = client.get("/api/v1/memory", headers={"Authorization": "Bearer adb_nope_nope"})
    assert_error(wrong, 401, "unauthorized")
    tampered = api.key[:-2] + ("aa" if not api.key.endswith("aa") else "bb")
    assert_error(
        client.get("/api/v1/memory", headers={"Authorization": f"Bearer {tampered}"}),
        401,
        "unauthorized",
    )
    assert api.get("/api/v1/memory").status_code == 200
    from tenants.models import ApiKey

    api_key_revoke(key=ApiKey.objects.get())
    assert_error(api.get("/api/v1/memory"), 401, "unauthorized")


def test_value_over_the_limit_is_413(api, settings):
    settings.MEMORY_MAX_VALUE_BYTES = 100
    error = assert_error(api.put("/api/v1/memory/big", {"value": "x" * 200}), 413, "too_large")
    assert "limit is 100." in error["message"]
    assert api.put("/api/v1/memory/small", {"value": "x" * 50}).status_code == 201


def test_body_over_the_request_limit_is_413(api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    assert_error(api.put("/api/v1/memory/big", {"value": "x" * 5000}), 413, "too_large")


@pytest.mark.parametrize("key", [".hidden", "a b", "ключ", "a" * 201, "-dash", "semi;colon"])
def test_bad_keys_are_422_with_the_rule(api, key):
    error = assert_error(api.put(f"/api/v1/memory/{key}", {"value": 1}), 422, "invalid")
    assert "1-200 characters" in error["message"]


def test_unknown_fields_and_missing_value_are_422(api):
    assert_error(api.put("/api/v1/memory/k", {"value": 1, "ttl": 5}), 422, "invalid")
    error = assert_error(api.put("/api/v1/memory/k", {}), 422, "invalid")
    assert "value" in error["message"]


def test_garbage_json_is_400(api):
    assert_error(api.put("/api/v1/memory/k", raw="{not json"), 400, "bad_request")


def test_bad_cursor_and_limit_are_422(api):
    assert_error(api.get("/api/v1/memory?cursor=%%%"), 422, "invalid")
    assert_error(api.get("/api/v1/memory?limit=0"), 422, "invalid")
    assert_error(api.get("/api/v1/memory?limit=201"), 422, "invalid")


def test_unknown_api_path_is_json_404(api):
    assert_error(api.get("/api/v1/nothing-here"), 404, "not_found")


def test_quarantined_tenant_database_answers_503(api, tenant):
    Database.objects.filter(pk=tenant.database_id).update(state=Database.State.QUARANTINED)
    assert_error(api.get("/api/v1/memory"), 503, "database_quarantined")


def test_two_tenants_never_see_each_others_memory(api, other_api):
    assert api.put("/api/v1/memory/shared-name", {"value": "acme"}).status_code == 201
    assert_error(other_api.get("/api/v1/memory/shared-name"), 404, "not_found")
    assert other_api.get("/api/v1/memory").json()["items"] == []
    assert other_api.put("/api/v1/memory/shared-name", {"value": "globex"}).status_code == 201
    assert api.get("/api/v1/memory/shared-name").json()["value"] == "acme"
    assert other_api.get("/api/v1/memory/shared-name").json()["value"] == "globex"


def test_openapi_and_docs_are_served(client):
    spec = client.get("/api/openapi.json")
    assert spec.status_code == 200
    paths = spec.json()["paths"]
    assert "/api/v1/memory" in paths and "/api/v1/memory/{key}" in paths
    assert client.get("/api/docs").status_code == 200


def test_healthz_reports_each_check(client, settings, data_dir, redis_url):
    ok = client.get("/healthz")
    assert ok.status_code == 200
    assert ok.json()["checks"] == {"control_db": "ok", "data_dir": "ok"}

    settings.REDIS_URL = redis_url
    assert client.get("/healthz").json()["checks"]["redis"] == "ok"

    settings.REDIS_URL = "redis://127.0.0.1:1/0"
    down = client.get("/healthz")
    assert down.status_code == 503
    assert down.json()["checks"]["redis"].startswith("error")

    settings.REDIS_URL = ""
    settings.DATA_DIR = data_dir / "missing" / "dir"
    unwritable = client.get("/healthz")
    assert unwritable.status_code == 503
    assert unwritable.json()["checks"]["data_dir"].startswith("error")


def test_memoised_key_lookup_still_honours_revocation_at_once(api, settings):
    from tenants.models import ApiKey

    settings.API_LOOKUP_CACHE_SECONDS = 30
    assert api.get("/api/v1/memory").status_code == 200
    assert api.get("/api/v1/memory").status_code == 200  # served from the memo
    api_key_revoke(key=ApiKey.objects.get())
    assert_error(api.get("/api/v1/memory"), 401, "unauthorized")
