"""An async call whose hand-off to the queue fails after its write committed: 503, and the call
is recorded `failed` with `dispatch_failed`, never left `queued` with nothing to run it.

The fault is Redis's own: the server runs as an ACL user that may touch only `agentdb:*` keys,
so leases, fences and the revocation generation work, and the run database commits the call,
while Celery's publish to its queue is refused (NOPERM)."""

import pytest
import redis
import requests

from tests.processes import (
    free_port,
    migrate_with_tenants,
    project_env,
    start_gunicorn,
    stop_gunicorn,
    wait_http,
)

pytestmark = pytest.mark.processes

USER = "agentdb-test-no-queue"


def test_a_publish_refused_by_redis_answers_503_and_marks_the_call_failed(tmp_path, redis_url):
    client = redis.Redis.from_url(redis_url)
    client.acl_setuser(
        USER,
        enabled=True,
        passwords=["+secret"],
        keys=["agentdb:*"],
        channels=["*"],
        commands=["+@all"],
    )
    try:
        port = free_port()
        env = project_env(
            tmp_path / "data",
            PORT=str(port),
            ACCESS_LOG="",
            REDIS_URL=redis_url.replace("redis://", f"redis://{USER}:secret@"),
        )
        key = migrate_with_tenants(env, "acme")["acme"]
        web = start_gunicorn(env, tmp_path / "gunicorn.log")
        base, headers = f"http://127.0.0.1:{port}/api/v1", {"Authorization": f"Bearer {key}"}
        try:
            wait_http(f"http://127.0.0.1:{port}/healthz")
            run = requests.post(f"{base}/runs", json={}, headers=headers, timeout=10).json()["id"]
            calls = f"{base}/runs/{run}/tool-calls"
            answer = requests.post(
                calls,
                json={"name": "echo", "args": {"x": 1}, "async": True},
                headers=headers,
                timeout=30,
            )
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "dependency_unavailable" and error["seq"] == 1
            call = requests.get(f"{calls}/1", headers=headers, timeout=10).json()
            assert call["status"] == "failed" and call["error"]["code"] == "dispatch_failed"
            # The run's writer still works: a synchronous call goes through.
            sync = requests.post(calls, json={"name": "note"}, headers=headers, timeout=10)
            assert sync.status_code == 201 and sync.json()["seq"] == 2
        finally:
            stop_gunicorn(web)
    finally:
        client.acl_deluser(USER)
