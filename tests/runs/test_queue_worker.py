"""Async tool calls end to end: gunicorn + a real Celery worker on the real Redis.

The stack runs in its own processes with its own control plane and Redis db 12 (broker, leases,
cache, results); tests use the HTTP API and, for canvas primitives, `manage.py shell`. Every
test runs against both pools (`TOOL_WORKER_POOL`): prefork (one message per child, its calls in
turn under SIGALRM, cancel by revoke) and threads (what `make worker` runs: tool threads with
deadlines, cancel by notification), each with one message at a time so that "the only worker
is busy" holds.
"""

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import redis
import requests
from celery import Celery

from tests.processes import (
    PYTHON,
    ROOT,
    free_port,
    manage,
    migrate_with_tenants,
    project_env,
    start_gunicorn,
    stop_gunicorn,
    wait_http,
)

pytestmark = pytest.mark.processes

BROKER_URL = os.environ.get("QUEUE_TEST_REDIS_URL", "redis://127.0.0.1:6379/12")
DEADLINE_S = 30.0


@dataclass
class Stack:
    base: str
    keys: dict[str, str]
    data_dir: Path
    env: dict[str, str]
    workers: list[subprocess.Popen]
    pool: str

    def headers(self, tenant: str = "acme") -> dict[str, str]:
        return {"Authorization": f"Bearer {self.keys[tenant]}"}

    def post(self, path: str, body: dict | None = None, tenant: str = "acme") -> requests.Response:
        return requests.post(
            self.base + path, json=body or {}, headers=self.headers(tenant), timeout=10
        )

    def get(self, path: str, tenant: str = "acme", **params) -> requests.Response:
        return requests.get(
            self.base + path, params=params, headers=self.headers(tenant), timeout=60
        )

    def run(self, tenant: str = "acme") -> str:
        response = self.post("/api/v1/runs", tenant=tenant)
        assert response.status_code == 201, response.text
        return response.json()["id"]

    def call(self, run: str, name: str, args: dict, tenant: str = "acme") -> int:
        response = self.post(
            f"/api/v1/runs/{run}/tool-calls", {"name": name, "args": args, "async": True}, tenant
        )
        assert response.status_code == 202, response.text
        assert response.json()["status"] == "queued"
        return response.json()["seq"]

    def wait_for(self, run: str, seq: int, statuses: set[str], tenant: str = "acme") -> dict:
        """Poll the call until its status is one of `statuses` (long polls for final ones)."""
        final = statuses <= {"succeeded", "failed", "cancelled"}
        deadline = time.monotonic() + DEADLINE_S
        while True:
            path = f"/api/v1/runs/{run}/tool-calls/{seq}"
            call = self.get(path, tenant, wait=5 if final else 0).json()
            if call["status"] in statuses or time.monotonic() > deadline:
                assert call["status"] in statuses, (call, self.worker_logs())
                return call
            if not final:
                time.sleep(0.02)  # polling interval for a non-final status

    def stop_workers(self) -> None:
        """kill -9 every worker: messages then wait in the queue (or in a dead one's unacked)."""
        for proc in self.workers:
            _kill(proc)

    def worker_logs(self, tail: int = 4000) -> str:
        """The end of every worker's log, for a failure's message."""
        return "\n".join(
            f"--- {log.name}:\n{log.read_text(errors='replace')[-tail:]}"
            for log in sorted(self.data_dir.glob("worker-*.log"))
        )

    def tenant_id(self, run: str) -> str:
        with contextlib.closing(sqlite3.connect(self.data_dir / "control.sqlite3")) as db:
            return db.execute("SELECT tenant_id FROM runs_run WHERE id = ?", [run]).fetchone()[0]

    def start_worker(self, name: str, concurrency: int = 1) -> subprocess.Popen:
        log = (self.data_dir / f"worker-{name}.log").open("ab")
        proc = subprocess.Popen(
            [
                str(Path(PYTHON).parent / "celery"),
                "-A",
                "project",
                "worker",
                "-P",
                self.pool,
                "-c",
                str(concurrency),
                "-n",
                f"{name}@%h",
                "-l",
                "INFO",
                "--without-gossip",
                "--without-mingle",
            ],
            # `-P prefork` alone would not do: Celery reads it as "no pool given" and takes the
            # configured one.
            env={**self.env, "TOOL_WORKER_POOL": self.pool},
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # kill -9 of the group takes the pool's children too
        )
        self.workers.append(proc)
        kind = "prefork" if self.pool == "prefork" else "thread"
        banner = f".> concurrency: {concurrency} ({kind})"
        app = Celery(broker=BROKER_URL)
        deadline = time.monotonic() + DEADLINE_S
        # Each reply is {"<name>@<host>": {"ok": "pong"}}.
        while not any(
            node.startswith(f"{name}@") for reply in app.control.ping(timeout=0.5) for node in reply
        ):
            assert proc.poll() is None, (self.data_dir / f"worker-{name}.log").read_text()
            assert time.monotonic() < deadline, f"worker {name} did not answer a ping"
        log_text = (self.data_dir / f"worker-{name}.log").read_text()
        assert banner in log_text, log_text[:2000]  # the pool this test is about
        return proc


def _kill(proc: subprocess.Popen, sig: int = signal.SIGKILL) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    proc.wait(timeout=30)


@pytest.fixture(scope="module", params=["prefork", "threads"])
def stack(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    conn = redis.Redis.from_url(BROKER_URL, socket_connect_timeout=2)
    try:
        conn.flushdb()
    except redis.RedisError as exc:
        pytest.fail(f"Redis is unreachable at {BROKER_URL} ({exc}); start redis-server.")
    data_dir = tmp_path_factory.mktemp("queue-stack")
    port = free_port()
    env = project_env(
        data_dir,
        PORT=str(port),
        WEB_CONCURRENCY="1",
        WEB_THREADS="8",
        ACCESS_LOG="",
        REDIS_URL=BROKER_URL,
        TOOL_MODULES="tests.runs.queue_tools",
        TASK_VISIBILITY_TIMEOUT_S="4",
        TOOL_RETRY_BACKOFF_S="0.05",
        # Celery's soft limit (timeout + grace) lands far past the timeout test's bound: only
        # the per-tool timeout can end a stuck tool within it.
        TOOL_KILL_GRACE_S="15",
    )
    keys = migrate_with_tenants(env, "acme", "globex")
    web = start_gunicorn(env, data_dir / "gunicorn.log")
    stack = Stack(f"http://127.0.0.1:{port}", keys, data_dir, env, [], request.param)
    try:
        wait_http(f"{stack.base}/healthz")
        stack.start_worker(f"first-{stack.pool}")
        yield stack
    finally:
        for proc in stack.workers:
            _kill(proc, signal.SIGTERM) if proc.poll() is None else None
        stop_gunicorn(web)
        conn.flushdb()


def test_async_call_goes_queued_running_succeeded_with_its_result_in_the_run_database(stack):
    run = stack.run()
    seq = stack.call(run, "test.count", {"seconds": 1})
    running = stack.wait_for(run, seq, {"running", "succeeded"})
    assert running["status"] == "running" and running["attempts"] == 1
    done = stack.wait_for(run, seq, {"succeeded"})
    assert done["result"] == {"executions": 1}
    assert done["started_at"] and done["completed_at"] and done["duration_ms"] >= 900
    with contextlib.closing(sqlite3.connect(next(stack.data_dir.rglob(f"{run}.sqlite3")))) as db:
        status, result = db.execute(
            "SELECT status, result FROM runs_toolcall WHERE seq = ?", [seq]
        ).fetchone()
    assert (status, result) == ("succeeded", '{"executions": 1}')


def test_long_poll_answers_when_the_call_finishes(stack):
    run = stack.run()
    seq = stack.call(run, "sleep", {"seconds": 0.5})
    started = time.monotonic()
    call = stack.get(f"/api/v1/runs/{run}/tool-calls/{seq}", wait=20).json()
    assert call["status"] == "succeeded"
    assert time.monotonic() - started < 10  # woken by the outcome, not by the end of the wait


def test_failing_tool_is_recorded_failed_with_its_error(stack):
    run = stack.run()
    seq = stack.call(run, "test.fail", {})
    call = stack.wait_for(run, seq, {"failed"})
    assert call["error"] == {"code": "boom", "message": "the tool failed on purpose"}
    assert call["result"] is None and call["attempts"] == 1


def test_retryable_failures_are_retried_until_success(stack):
    run = stack.run()
    seq = stack.call(run, "test.flaky", {"succeed_on": 3})
    call = stack.wait_for(run, seq, {"succeeded"})
    assert call["result"] == {"attempt": 3} and call["attempts"] == 3


def test_a_tool_past_its_timeout_is_failed_with_a_timeout_error(stack):
    run = stack.run()
    seq = stack.call(run, "test.stuck", {})
    call = stack.wait_for(run, seq, {"failed"})
    assert call["error"]["code"] == "timeout"
    assert call["duration_ms"] < 10_000
    # The worker is free again: the next call runs.
    assert stack.wait_for(run, stack.call(run, "echo", {"x": 1}), {"succeeded"})["result"] == {
        "x": 1
    }


def test_cancel_of_a_queued_call_means_it_never_runs(stack):
    run = stack.run()
    blocker = stack.call(run, "sleep", {"seconds": 2})  # the only worker process is busy
    stack.wait_for(run, blocker, {"running"})
    seq = stack.call(run, "test.count", {})
    response = stack.post(f"/api/v1/runs/{run}/tool-calls/{seq}/cancel")
    assert response.status_code == 200 and response.json()["status"] == "cancelled"
    stack.wait_for(run, blocker, {"succeeded"})
    after = stack.call(run, "echo", {})  # FIFO with one worker: runs after the cancelled one
    stack.wait_for(run, after, {"succeeded"})
    call = stack.get(f"/api/v1/runs/{run}/tool-calls/{seq}").json()
    assert call["status"] == "cancelled" and call["attempts"] == 0
    assert stack.get(f"/api/v1/memory/runs/{run}/{seq}").status_code == 404  # it never ran
    again = stack.post(f"/api/v1/runs/{run}/tool-calls/{after}/cancel")
    assert again.status_code == 409 and again.json()["error"]["code"] == "not_cancellable"


def test_cancel_of_a_running_call_stops_it_and_nothing_is_recorded_after(stack):
    run = stack.run()
    seq = stack.call(run, "sleep", {"seconds": 20})
    stack.wait_for(run, seq, {"running"})
    assert stack.post(f"/api/v1/runs/{run}/tool-calls/{seq}/cancel").status_code == 200
    after = stack.call(run, "echo", {})
    stack.wait_for(run, after, {"succeeded"})  # long before the 20 s sleep would have ended
    assert stack.get(f"/api/v1/runs/{run}/tool-calls/{seq}").json()["status"] == "cancelled"


def test_worker_killed_mid_call_is_redelivered_and_recorded_exactly_once(stack):
    run = stack.run()
    seq = stack.call(run, "test.count", {"seconds": 1.5})
    stack.wait_for(run, seq, {"running"})
    # `running` is committed before the tool starts: kill only once its first execution counted.
    deadline = time.monotonic() + DEADLINE_S
    while stack.get(f"/api/v1/memory/runs/{run}/{seq}").status_code != 200:
        assert time.monotonic() < deadline, "the first execution never counted itself"
        time.sleep(0.02)  # polling interval
    _kill(stack.workers[-1])  # kill -9: the worker and its pool process, mid-call
    stack.start_worker(f"second-{stack.pool}")
    call = stack.wait_for(run, seq, {"succeeded"})
    # Ran twice (the first run died), recorded once, by the attempt that finished.
    assert call["attempts"] == 2 and call["result"] == {"executions": 2}
    completed_at = call["completed_at"]

    # A further delivery of the finished call (as a broker may redeliver) runs nothing.
    Celery(broker=BROKER_URL).send_task(
        "runs.tool_call_execute", args=[stack.tenant_id(run), run, seq]
    )
    stack.wait_for(run, stack.call(run, "echo", {}), {"succeeded"})  # FIFO: it went first
    again = stack.get(f"/api/v1/runs/{run}/tool-calls/{seq}").json()
    assert again["completed_at"] == completed_at and again["attempts"] == 2
    assert stack.get(f"/api/v1/memory/runs/{run}/{seq}").json()["version"] == 2


CHORD = """
import json
from runs.queue import tool_calls_chord
from runs.models import Run
for run_id, marker in {pairs!r}:
    run = Run.objects.select_related("tenant", "database").get(id=run_id)
    calls = [("echo", {{"tenant": marker, "i": i}}) for i in range(3)]
    calls = tool_calls_chord(run=run, calls=calls)
    print(json.dumps([c.seq for c in calls]))
"""


def test_a_chord_callback_records_into_the_right_tenants_run(stack):
    runs = {"acme": stack.run("acme"), "globex": stack.run("globex")}
    pairs = [(runs["acme"], "acme"), (runs["globex"], "globex")]
    manage(stack.env, "shell", "-c", CHORD.format(pairs=pairs))
    for tenant, run in runs.items():
        deadline = time.monotonic() + DEADLINE_S
        while True:
            events = stack.get(f"/api/v1/runs/{run}/events", tenant, kind="tool_calls.gathered")
            items = events.json()["items"]
            if items or time.monotonic() > deadline:
                break
            time.sleep(0.05)  # polling interval
        assert len(items) == 1, items
        results = items[0]["payload"]["results"]
        assert sorted(r["result"]["i"] for r in results) == [0, 1, 2]
        assert {r["result"]["tenant"] for r in results} == {tenant}
        assert {r["status"] for r in results} == {"succeeded"}


def _audit_kinds(stack: Stack, run: str) -> dict[int, list[str]]:
    """The audit entries of each tool call of the run, by seq, in order."""
    path = next(stack.data_dir.rglob(f"{run}.sqlite3"))
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute("SELECT kind, body FROM audit_runentry ORDER BY seq").fetchall()
    kinds: dict[int, list[str]] = {}
    for kind, body in rows:
        entry = json.loads(body)
        if entry.get("table") == "runs_toolcall" and "row" in entry:
            kinds.setdefault(entry["row"]["seq"], []).append(kind)
    return kinds


def test_a_worker_killed_mid_batch_loses_no_call_and_records_none_twice(stack):
    """Many calls of one run in flight on one worker (their claims and outcomes share the run
    writer's transactions); kill -9 while some are running: every call is recorded once."""
    if stack.pool != "threads":
        pytest.skip("batches of one run need a worker running several calls at once")
    stack.stop_workers()
    run = stack.run()
    seqs = [stack.call(run, "test.count", {"seconds": 1.0}) for _ in range(40)]
    stack.start_worker("batch", concurrency=8)
    # Running for a whole second (polled every 20 ms): the kill lands while it runs, whatever
    # the machine's load.
    stack.wait_for(run, seqs[10], {"running"})
    _kill(stack.workers[-1])  # mid-batch: some calls done, some running, the rest queued
    stack.start_worker("after-batch", concurrency=8)
    # A call whose message the kill took between kombu's BRPOP and its unacked entry is in
    # the broker no more: what Celery beat's `redispatch_lost` sends again (the others are
    # queued or unacknowledged, and left alone).
    resent = _redispatch(stack, "--min-age", "0")
    outcomes = {}
    for seq in seqs:
        call = stack.wait_for(run, seq, {"succeeded"})
        outcomes[seq] = call
    kinds = _audit_kinds(stack, run)
    for seq, call in outcomes.items():
        # One outcome per call; a redelivered call that had finished did not run again.
        assert kinds[seq].count("outcome") == 1, (seq, kinds[seq])
        assert kinds[seq].count("claim") == call["attempts"], (seq, kinds[seq], call)
        # Every execution was a claimed attempt, and none ran after the outcome.
        assert 1 <= call["result"]["executions"] <= call["attempts"], call
        memory = stack.get(f"/api/v1/memory/runs/{run}/{seq}").json()
        assert memory["version"] == call["result"]["executions"], (memory, call)
    assert any(call["attempts"] == 2 for call in outcomes.values())  # some died running
    for _, seq in resent:
        assert outcomes[seq]["attempts"] == 1, outcomes[seq]  # lost while queued: ran once


# --- Calls committed together travel together (decision 0056) ----------------------------------

ENQUEUE_MANY_UNPUBLISHED = """
import json
from runs.models import Run
from runs.services import tool_call_enqueue
run = Run.objects.select_related("tenant", "database").get(id={run!r})
calls = {calls!r}
print(json.dumps([tool_call_enqueue(run=run, name=name, args=args, dispatch=False)[0].seq
                  for name, args in calls]))
"""


def _carried(message: dict) -> list[str]:
    """The call task ids a message carries: its `tool_calls` header, or its own id."""
    headers = message["headers"]
    return headers.get("tool_calls", [headers["id"]])


def test_calls_committed_together_travel_in_one_message_and_each_runs_once(stack):
    """While another holder has the run's lease, async calls posted at once queue in the web
    process's writer and commit in one batch: their hand-off is one message listing each call,
    the lost hand-off check finds none of them missing, and each runs once."""
    stack.stop_workers()
    run = stack.run()
    broker = redis.Redis.from_url(BROKER_URL)
    # Within the writes' wait bound (RUN_WRITE_WAIT_S, 3 s): they wait for it, then commit.
    assert broker.set(f"agentdb:lease:{run}", "another holder", px=2000)
    with ThreadPoolExecutor(6) as pool:
        seqs = sorted(pool.map(lambda _: stack.call(run, "test.count", {}), range(6)))
    messages = [json.loads(raw) for raw in broker.lrange("celery", 0, -1)]
    carried = sorted(task for message in messages for task in _carried(message))
    assert carried == sorted(f"toolcall-{run}-{seq}" for seq in seqs)  # each call, once
    assert len(messages) < len(seqs), messages  # calls shared a message
    assert _redispatch(stack, "--min-age", "0") == []  # none is lost: the broker lists them
    stack.start_worker(f"together-{stack.pool}")
    for seq in seqs:
        _ran_once(stack, run, seq)


def test_a_message_of_several_calls_records_each_outcome_once(stack):
    """One message with calls of every kind: each is recorded as its own message would have
    been; a finished call in it does not run again; a retryable one comes back alone; on the
    threads pool the calls run at once; the same message delivered again changes nothing."""
    run = stack.run()
    finished = stack.call(run, "test.count", {})
    stack.wait_for(run, finished, {"succeeded"})
    calls = [
        ("test.count", {"seconds": 1}),
        ("test.count", {"seconds": 1}),
        ("test.fail", {}),
        ("test.stuck", {}),
        ("echo", {"x": 1}),
        ("test.flaky", {"succeed_on": 2}),
    ]
    out = manage(
        stack.env, "shell", "-c", ENQUEUE_MANY_UNPUBLISHED.format(run=run, calls=calls)
    ).stdout
    count_a, count_b, failing, stuck, echo, flaky = json.loads(out.strip().splitlines()[-1])
    seqs = [finished, count_a, count_b, failing, stuck, echo, flaky]
    app = Celery(broker=BROKER_URL)
    app.send_task("runs.tool_calls_execute", args=[stack.tenant_id(run), run, seqs])
    done = {seq: stack.wait_for(run, seq, {"succeeded", "failed"}) for seq in seqs}
    assert done[finished]["result"] == {"executions": 1} and done[finished]["attempts"] == 1
    assert done[count_a]["result"] == done[count_b]["result"] == {"executions": 1}
    assert done[failing]["error"]["code"] == "boom"
    assert done[stuck]["error"]["code"] == "timeout"
    assert done[echo]["result"] == {"x": 1}
    assert done[flaky]["result"] == {"attempt": 2} and done[flaky]["attempts"] == 2
    if stack.pool == "threads":  # each started before the other ended
        first, second = done[count_a], done[count_b]
        assert max(first["started_at"], second["started_at"]) < min(
            first["completed_at"], second["completed_at"]
        ), (first, second)
    # Delivered again (as a broker may): nothing is run or recorded again.
    app.send_task("runs.tool_calls_execute", args=[stack.tenant_id(run), run, seqs])
    stack.wait_for(run, stack.call(run, "echo", {}), {"succeeded"})  # FIFO: it went first
    for seq in seqs:
        again = stack.get(f"/api/v1/runs/{run}/tool-calls/{seq}").json()
        assert again == done[seq], (again, done[seq])
    kinds = _audit_kinds(stack, run)
    assert all(kinds[seq].count("outcome") == 1 for seq in seqs), kinds
    assert _executions(stack, run, count_a) == _executions(stack, run, count_b) == 1


def _send_unpublished(stack: Stack, run: str, calls: list) -> list[int]:
    """Record `calls` (name, args) queued with no message, then send them in one message."""
    out = manage(
        stack.env, "shell", "-c", ENQUEUE_MANY_UNPUBLISHED.format(run=run, calls=calls)
    ).stdout
    seqs = json.loads(out.strip().splitlines()[-1])
    Celery(broker=BROKER_URL).send_task(
        "runs.tool_calls_execute", args=[stack.tenant_id(run), run, seqs]
    )
    return seqs


def test_a_quick_call_is_recorded_without_waiting_for_a_slow_one_in_its_message(stack):
    run = stack.run()
    quick, slow = _send_unpublished(stack, run, [("echo", {"x": 1}), ("sleep", {"seconds": 5})])
    assert stack.wait_for(run, quick, {"succeeded"})["result"] == {"x": 1}
    # Not finished yet (a prefork child may not have claimed it yet: still `queued`).
    slow_now = stack.get(f"/api/v1/runs/{run}/tool-calls/{slow}").json()["status"]
    assert slow_now in ("queued", "running"), slow_now
    stack.wait_for(run, slow, {"succeeded"})


def test_a_call_cancelled_while_waiting_its_turn_in_a_message_never_runs(stack):
    """A prefork child runs a message's calls one after the other, each claimed when its turn
    comes: one cancelled while the first runs (still `queued`) is not run."""
    if stack.pool != "prefork":
        pytest.skip("on the threads pool a message's calls all start at once")
    run = stack.run()
    first, waiting = _send_unpublished(stack, run, [("sleep", {"seconds": 2}), ("test.count", {})])
    stack.wait_for(run, first, {"running"})
    cancel = stack.post(f"/api/v1/runs/{run}/tool-calls/{waiting}/cancel")
    assert cancel.status_code == 200 and cancel.json()["status"] == "cancelled", cancel.text
    stack.wait_for(run, first, {"succeeded"})
    after = stack.call(run, "echo", {})  # FIFO with one worker: after the message
    stack.wait_for(run, after, {"succeeded"})
    assert stack.get(f"/api/v1/runs/{run}/tool-calls/{waiting}").json()["status"] == "cancelled"
    assert _executions(stack, run, waiting) == 0  # it never ran


def test_cancel_of_a_running_call_in_a_message_stops_it(stack):
    """A tool deaf to cancels (no `ctx.wait`), in a message of several: a cancel stops it (prefork:
    its child's main thread is interrupted; threads: its thread is left behind) and the worker
    goes on long before the tool's 60 s would have ended."""
    run = stack.run()
    _, blocked = _send_unpublished(stack, run, [("echo", {}), ("test.block", {"seconds": 60})])
    stack.wait_for(run, blocked, {"running"})
    assert stack.post(f"/api/v1/runs/{run}/tool-calls/{blocked}/cancel").status_code == 200
    after = stack.call(run, "echo", {})  # the only worker takes it once the message is done
    stack.wait_for(run, after, {"succeeded"})  # within DEADLINE_S (30 s), not after 60 s
    assert stack.get(f"/api/v1/runs/{run}/tool-calls/{blocked}").json()["status"] == "cancelled"


def test_a_worker_killed_mid_message_of_several_calls_records_each_once(stack):
    """kill -9 while a message of several calls runs: the message is delivered again, and each
    of its calls (and of the message behind it) is recorded once, by its last attempt."""
    stack.stop_workers()
    run = stack.run()
    seqs = [
        *_send_unpublished(stack, run, [("test.count", {"seconds": 2})] * 4),
        *_send_unpublished(stack, run, [("test.count", {"seconds": 2})] * 4),
    ]
    stack.start_worker(f"several-{stack.pool}")
    # Whichever message runs when the worker is seen up (it may have started before the ping).
    deadline = time.monotonic() + DEADLINE_S
    while not any(
        stack.get(f"/api/v1/runs/{run}/tool-calls/{seq}").json()["status"] == "running"
        for seq in seqs
    ):
        assert time.monotonic() < deadline, stack.worker_logs()
        time.sleep(0.02)  # polling interval
    _kill(stack.workers[-1])  # mid-message: a call claimed, running
    stack.start_worker(f"after-several-{stack.pool}")
    outcomes = {seq: stack.wait_for(run, seq, {"succeeded"}) for seq in seqs}
    kinds = _audit_kinds(stack, run)
    for seq, call in outcomes.items():
        assert kinds[seq].count("outcome") == 1, (seq, kinds[seq])
        assert kinds[seq].count("claim") == call["attempts"], (seq, kinds[seq], call)
        assert 1 <= call["result"]["executions"] <= call["attempts"], call
    assert any(call["attempts"] == 2 for call in outcomes.values())  # died running, ran again


# --- Lost hand-offs (decision 0050) ------------------------------------------------------------

ENQUEUE_UNPUBLISHED = """
from runs.models import Run
from runs.services import tool_call_enqueue
run = Run.objects.select_related("tenant", "database").get(id={run!r})
print(tool_call_enqueue(run=run, name="test.count", args={{}}, dispatch=False)[0].seq)
"""


def _redispatch(stack: Stack, *args: str) -> list[tuple[str, int]]:
    out = manage(stack.env, "redispatch_calls", "--json", *args).stdout
    done = json.loads(out.strip().splitlines()[-1])
    assert done["errors"] == {}, done
    return [(call["run"], call["seq"]) for call in done["calls"]]


def _ran_once(stack: Stack, run: str, seq: int) -> None:
    """The call succeeds, at its first attempt, and its tool ran exactly once."""
    call = stack.wait_for(run, seq, {"succeeded"})
    assert call["attempts"] == 1 and call["result"] == {"executions": 1}, call
    assert _executions(stack, run, seq) == 1


def _executions(stack: Stack, run: str, seq: int) -> int:
    response = stack.get(f"/api/v1/memory/runs/{run}/{seq}")
    return response.json()["version"] if response.status_code == 200 else 0


def test_a_call_committed_but_never_published_is_sent_again_and_runs_once(stack):
    """The process died between the commit and the publish: the call sits `queued` with no
    message. Past the grace it is sent again, once, and runs once."""
    run = stack.run()
    out = manage(stack.env, "shell", "-c", ENQUEUE_UNPUBLISHED.format(run=run)).stdout
    seq = int(out.strip().splitlines()[-1])
    assert _redispatch(stack) == []  # within the grace: it may still be on its way
    assert stack.get(f"/api/v1/runs/{run}/tool-calls/{seq}").json()["status"] == "queued"
    assert _redispatch(stack, "--min-age", "0", "--dry-run") == [(run, seq)]
    assert _redispatch(stack, "--min-age", "0") == [(run, seq)]
    _ran_once(stack, run, seq)
    assert _redispatch(stack, "--min-age", "0") == []  # finished: nothing more to send


def test_calls_whose_messages_redis_lost_are_sent_again_and_each_runs_once(stack):
    """Redis restarted empty (it keeps nothing on disk) while calls waited for a worker: every
    call answered 202 still runs, once."""
    stack.stop_workers()
    run = stack.run()
    seqs = [stack.call(run, "test.count", {}) for _ in range(3)]
    redis.Redis.from_url(BROKER_URL).flushdb()  # the queue, the unacked set, the leases: all gone
    stack.start_worker(f"after-flush-{stack.pool}")
    assert sorted(_redispatch(stack, "--min-age", "0")) == [(run, seq) for seq in seqs]
    for seq in seqs:
        _ran_once(stack, run, seq)
    assert _redispatch(stack, "--min-age", "0") == []


def test_a_call_whose_message_waits_in_the_queue_is_not_sent_twice(stack):
    stack.stop_workers()
    run = stack.run()
    seq = stack.call(run, "test.count", {})
    assert _redispatch(stack, "--min-age", "0") == []  # its message is in the queue
    assert redis.Redis.from_url(BROKER_URL).llen("celery") == 1
    stack.start_worker(f"after-wait-{stack.pool}")
    _ran_once(stack, run, seq)


def test_a_call_a_dying_worker_took_off_the_queue_is_sent_again_and_runs_once(stack):
    """kombu's Redis transport takes a message off the queue (BRPOP) before it records it as
    unacknowledged: a worker killed in between leaves the call queued with its message nowhere.
    The redispatcher sees it in neither place, twice, and sends it again."""
    stack.stop_workers()
    run = stack.run()
    seq = stack.call(run, "test.count", {})
    broker = redis.Redis.from_url(BROKER_URL)
    taken = broker.brpop(["celery"], timeout=5)  # the dying worker's BRPOP
    assert taken is not None, "the call's message never reached the queue"
    headers = json.loads(taken[1])["headers"]
    assert headers["id"] == f"toolcall-{run}-{seq}"
    assert headers["argsrepr"] == repr((stack.tenant_id(run), run, seq))  # for logs and events
    assert _redispatch(stack, "--min-age", "0", "--dry-run") == [(run, seq)]
    assert broker.llen("celery") == 0  # a dry run sends nothing
    assert _redispatch(stack, "--min-age", "0") == [(run, seq)]
    stack.start_worker(f"after-take-{stack.pool}")
    _ran_once(stack, run, seq)
    assert _redispatch(stack, "--min-age", "0") == []


def test_a_call_a_live_worker_holds_unacknowledged_is_not_sent_again(stack):
    """A worker that took the message and recorded it unacknowledged (prefetched, or waiting for
    a retry's countdown) still has it: the call is queued but not lost."""
    stack.stop_workers()
    run = stack.run()
    seq = stack.call(run, "test.count", {})
    app = Celery(broker=BROKER_URL)
    received: list = []
    with app.connection_for_read() as conn:
        queue = app.amqp.queues["celery"]
        with conn.Consumer([queue], accept=["json"], callbacks=[lambda _b, m: received.append(m)]):
            conn.drain_events(timeout=5)  # taken and recorded unacknowledged, as a worker does
        assert len(received) == 1 and received[0].headers["id"] == f"toolcall-{run}-{seq}"
        assert redis.Redis.from_url(BROKER_URL).hlen("unacked") == 1
        assert _redispatch(stack, "--min-age", "0") == []
    # Closing the connection without an ack gives the message back to the queue, as a worker's
    # visibility timeout would: it runs once.
    stack.start_worker(f"after-hold-{stack.pool}")
    _ran_once(stack, run, seq)


def test_a_message_a_live_worker_is_taking_is_not_sent_again(stack):
    """Between kombu's BRPOP and its unacked entry a message is in neither place, for a moment:
    the first reading misses the call's task, the second (2 s later) finds it unacknowledged,
    and the call is not sent twice."""
    stack.stop_workers()
    run = stack.run()
    seq = stack.call(run, "test.count", {})
    broker = redis.Redis.from_url(BROKER_URL)
    _, raw = broker.brpop(["celery"], timeout=5)  # a worker takes it...
    message = json.loads(raw)
    assert message["headers"]["id"] == f"toolcall-{run}-{seq}"
    command = [PYTHON, str(ROOT / "manage.py"), "redispatch_calls", "--json", "--min-age", "0"]
    with redis.Redis.from_url(BROKER_URL).monitor() as monitor:
        redispatch = subprocess.Popen(
            command, env=stack.env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for seen in monitor.listen():  # the redispatcher's first reading of the broker
            if seen["command"].startswith("HVALS"):
                break
    tag = message["properties"]["delivery_tag"]  # ...and records it unacknowledged, late
    broker.hset("unacked", tag, json.dumps([message, "celery", "celery"]))
    broker.zadd("unacked_index", {tag: time.time()})
    out, err = redispatch.communicate(timeout=120)
    assert redispatch.returncode == 0, err
    assert json.loads(out.decode().strip().splitlines()[-1])["calls"] == []
    # The worker that "took" it is gone: after the visibility timeout the next worker runs it.
    stack.start_worker(f"after-taking-{stack.pool}")
    _ran_once(stack, run, seq)
