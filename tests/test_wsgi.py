"""project.wsgi: /api/ through the API's lean middleware, the rest through all of it."""

import json

import pytest
from django.test.client import RequestFactory

from project.wsgi import application


def call(path: str, **environ: str) -> tuple[str, dict[str, str], bytes]:
    answered: dict[str, object] = {}

    def start_response(status: str, headers: list[tuple[str, str]], exc_info=None) -> None:
        answered.update(status=status, headers=dict(headers))

    factory = RequestFactory()
    base = factory._base_environ(PATH_INFO=path, REQUEST_METHOD="GET", **environ)  # type: ignore[attr-defined]
    body = b"".join(application(base, start_response))
    return answered["status"], answered["headers"], body  # type: ignore[return-value]


@pytest.mark.django_db
def test_api_paths_skip_the_site_only_middleware():
    status, headers, body = call("/api/v1/runs")
    assert status.startswith("401")
    assert json.loads(body)["error"]["code"] == "unauthorized"
    # XFrameOptionsMiddleware (site only) marks every answer it sees; the API's answers skip it.
    assert "X-Frame-Options" not in headers
    # SecurityMiddleware stays on both stacks.
    assert headers["X-Content-Type-Options"] == "nosniff"


@pytest.mark.django_db
def test_other_paths_keep_the_whole_stack():
    status, headers, _ = call("/admin/login/")
    assert status.startswith("200")
    assert headers["X-Frame-Options"] == "DENY"
    assert "csrftoken" in headers.get("Set-Cookie", "")


@pytest.mark.django_db
def test_api_still_checks_the_host():
    status, _, body = call("/api/v1/runs", HTTP_HOST="evil.example")
    assert status.startswith("400")
    assert json.loads(body)["error"]["code"] == "bad_request"


def test_the_test_client_splits_the_same_way(client, db):
    assert "X-Frame-Options" not in client.get("/api/v1/runs").headers
    assert client.get("/admin/login/").headers["X-Frame-Options"] == "DENY"
