import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest


@pytest.fixture
def archiving(settings, monkeypatch) -> None:
    """Completing a run archives it, inline (as in embedded mode) even when REDIS_URL is set."""
    from project.celery import app

    settings.ARCHIVE_ON_COMPLETE = True
    monkeypatch.setitem(app.conf, "task_always_eager", True)


@pytest.fixture
def post(api):
    def _post(path: str, data=None, method: str = "post", **headers):
        return getattr(api.client, method)(
            path,
            json.dumps(data) if data is not None else "",
            content_type="application/json",
            headers={"Authorization": f"Bearer {api.key}", **headers},
        )

    return _post


@pytest.fixture
def put_bytes(api):
    def _put(path: str, body: bytes, content_type: str = "application/octet-stream"):
        return api.client.put(
            path, body, content_type=content_type, headers={"Authorization": f"Bearer {api.key}"}
        )

    return _put


@pytest.fixture
def busy_run(post) -> str:
    """A run with 3 tool calls (2 with outcomes), 2 event batches, 2 state versions."""
    run_id = post("/api/v1/runs", {"metadata": {"agent": "a"}}).json()["id"]
    base = f"/api/v1/runs/{run_id}"
    for i in range(1, 4):
        assert (
            post(f"{base}/tool-calls", {"name": "search", "args": {"q": f"x{i}"}}).status_code
            == 201
        )
        events = [{"kind": "step", "payload": {"i": i, "n": n, "text": "héllo"}} for n in range(3)]
        assert post(f"{base}/events", {"events": events}).status_code == 201
        if i < 3:
            outcome = post(f"{base}/tool-calls/{i}", {"result": {"ok": i}}, method="patch")
            assert outcome.status_code == 200, outcome.content
    for version in (0, 1):
        state = post(
            f"{base}/state", {"state": {"step": version}, "version": version}, method="put"
        )
        assert state.status_code == 200, state.content
    return run_id


@pytest.fixture
def s3(settings) -> Iterator[str]:
    """A real S3-protocol server (moto) on loopback; both storages point at its bucket."""
    import boto3
    import requests
    from moto.server import ThreadedMotoServer

    from tests.processes import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    # moto keeps its state per process, across servers: start from an empty one.
    requests.post(f"{endpoint}/moto-api/reset", timeout=10).raise_for_status()
    options = {
        "bucket_name": "agentdb-test",
        "endpoint_url": endpoint,
        "region_name": "us-east-1",
        "access_key": "testing",
        "secret_key": "testing",
        "file_overwrite": False,
    }
    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    client.create_bucket(Bucket="agentdb-test")
    settings.STORAGES = {
        **settings.STORAGES,
        **{
            kind: {
                "BACKEND": "storages.backends.s3.S3Storage",
                "OPTIONS": {**options, "location": kind},
            }
            for kind in ("archives", "artifacts")
        },
    }
    try:
        yield endpoint
    finally:
        server.stop()


def s3_keys(endpoint: str) -> list[str]:
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )
    found = client.list_objects_v2(Bucket="agentdb-test").get("Contents", [])
    return sorted(item["Key"] for item in found)


def sql(path: Path, statement: str, *params) -> list[tuple]:
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        return conn.execute(statement, params).fetchall()
    finally:
        conn.close()
