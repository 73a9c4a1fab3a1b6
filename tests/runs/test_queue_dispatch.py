"""An async call whose hand-off to the queue fails after its write committed: 503, and the call
is recorded `failed` with `dispatch_failed`, never left `queued` with nothing to run it.

The fault is Redis's own: the server runs as an ACL user that may touch only `agentdb:*` keys,
so leases, fences and the revocation generation work, and the run database commits the call,
while Celery's publish to its queue is refused (NOPERM)."""

import pytest
import redis

from tests.processes import serve, stop_gunicorn

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
        live = serve(
            tmp_path, ["acme"], REDIS_URL=redis_url.replace("redis://", f"redis://{USER}:secret@")
        )
        try:
            run = live.call("acme", "POST", "/runs", {}).json()["id"]
            calls = f"/runs/{run}/tool-calls"
            answer = live.call(
                "acme", "POST", calls, {"name": "echo", "args": {"x": 1}, "async": True}
            )
            assert answer.status_code == 503, answer.text
            error = answer.json()["error"]
            assert error["code"] == "dependency_unavailable" and error["seq"] == 1
            call = live.call("acme", "GET", f"{calls}/1").json()
            assert call["status"] == "failed" and call["error"]["code"] == "dispatch_failed"
            # The run's writer still works: a synchronous call goes through.
            sync = live.call("acme", "POST", calls, {"name": "note"})
            assert sync.status_code == 201 and sync.json()["seq"] == 2
        finally:
            stop_gunicorn(live.proc)
    finally:
        client.acl_deluser(USER)
