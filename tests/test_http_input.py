"""Hostile input through gunicorn: what only a real HTTP server shows (chunked bodies, the
request-line and header limits gunicorn enforces, raw protocol errors, HEAD, Host)."""

import socket

import pytest
import requests

pytestmark = pytest.mark.processes

MiB = 1024 * 1024


def assert_json_error(response: requests.Response, status: int, code: str) -> dict:
    assert response.status_code == status, response.text[:300]
    assert response.headers["Content-Type"].startswith("application/json"), response.text[:300]
    error = response.json()["error"]
    assert error["code"] == code and error["message"], error
    return error


def auth(server, tenant: str = "acme") -> dict[str, str]:
    return {"Authorization": f"Bearer {server.keys[tenant]}"}


def chunks(data: bytes, size: int = 1000):
    for start in range(0, len(data), size):
        yield data[start : start + size]


def raw_exchange(server, request: bytes) -> tuple[int, dict[str, str], bytes]:
    """Send raw bytes and return (status, headers, body) of the answer."""
    host, port = server.base.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (x.partition(":") for x in lines)}
    return int(status_line.split()[1]), headers, body


def test_chunked_bodies_are_read_like_sized_ones(server):
    body = b'{"metadata": {"sent": "chunked"}, "labels": ["c"]}'
    created = requests.post(
        f"{server.base}/api/v1/runs",
        data=chunks(body, 7),
        headers={**auth(server), "Content-Type": "application/json"},
        timeout=10,
    )
    assert created.request.headers.get("Transfer-Encoding") == "chunked"
    assert created.status_code == 201, created.text
    assert created.json()["metadata"] == {"sent": "chunked"}
    stored = requests.put(
        f"{server.base}/api/v1/memory/chunked",
        data=chunks(b'{"value": "' + b"v" * 100_000 + b'"}'),
        headers={**auth(server), "Content-Type": "application/json"},
        timeout=10,
    )
    assert stored.status_code in (200, 201), stored.text
    assert stored.json()["size_bytes"] == 100_002


def test_a_chunked_body_over_the_limit_is_json_413(server):
    response = requests.put(
        f"{server.base}/api/v1/memory/big",
        data=chunks(b'{"value": "' + b"x" * (2 * MiB) + b'"}', 64 * 1024),
        headers={**auth(server), "Content-Type": "application/json"},
        timeout=30,
    )
    error = assert_json_error(response, 413, "too_large")
    assert "Request body exceeds 2097152 bytes" in error["message"]


def test_a_request_line_over_the_limit_is_json_414(server):
    response = requests.get(f"{server.base}/api/v1/memory/{'k' * 5000}", timeout=10)
    assert_json_error(response, 414, "uri_too_long")
    fits = requests.get(f"{server.base}/api/v1/memory/{'k' * 200}", headers=auth(server))
    assert_json_error(fits, 404, "not_found")


def test_oversized_headers_are_json_431(server):
    response = requests.get(
        f"{server.base}/api/v1/runs", headers={"X-Big": "b" * 9000, **auth(server)}, timeout=10
    )
    assert_json_error(response, 431, "headers_too_large")


@pytest.mark.parametrize(
    "request_bytes",
    [
        b"GARBAGE\r\n\r\n",
        b"GET /api/v1/runs HTTP/9.9\r\nHost: 127.0.0.1\r\n\r\n",
        b"GET /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nBad Header: x\r\n\r\n",
        b"POST /api/v1/runs HTTP/1.1\r\nHost: 127.0.0.1\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"zz\r\n{}\r\n0\r\n\r\n",
    ],
)
def test_protocol_errors_gunicorn_answers_are_json(server, request_bytes):
    status, headers, body = raw_exchange(server, request_bytes)
    assert 400 <= status < 500, (status, body)
    assert headers["content-type"] == "application/json", body
    import json

    error = json.loads(body)["error"]
    assert error["code"] and error["message"]


def test_head_over_http_has_get_headers_and_no_body(server):
    get = requests.get(f"{server.base}/api/v1/runs", headers=auth(server), timeout=10)
    head = requests.head(f"{server.base}/api/v1/runs", headers=auth(server), timeout=10)
    assert head.status_code == get.status_code == 200
    assert head.content == b"" and head.headers["Content-Type"] == get.headers["Content-Type"]


def test_bad_host_and_wrong_methods_are_json_over_http(server):
    bad_host = requests.get(
        f"{server.base}/api/v1/runs", headers={"Host": "evil.example", **auth(server)}, timeout=10
    )
    assert_json_error(bad_host, 400, "bad_request")
    for method in ("DELETE", "PATCH", "OPTIONS"):
        response = requests.request(method, f"{server.base}/api/v1/runs", headers=auth(server))
        assert_json_error(response, 405, "method_not_allowed")
        assert response.headers["Allow"] == "GET, HEAD, POST"


def test_non_ascii_digits_in_if_match_are_400_over_http(server):
    run = requests.post(f"{server.base}/api/v1/runs", json={}, headers=auth(server), timeout=10)
    url = f"{server.base}/api/v1/runs/{run.json()['id']}/state"
    for value in ("²", "¹", "¼"):  # latin-1, so they reach the server as one byte each
        response = requests.put(
            url, json={"state": 1}, headers={**auth(server), "If-Match": value}, timeout=10
        )
        assert_json_error(response, 400, "bad_request")
