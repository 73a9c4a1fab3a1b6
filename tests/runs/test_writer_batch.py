"""One group-commit batch, in-process: a job that fails on its own rolls back alone."""

import sqlite3
import threading
import time

import pytest
from django import db
from django.utils import timezone

from runs import services, writer
from runs.exceptions import RunClosed, StaleVersion
from runs.leases import leases
from runs.models import RunInfo, ToolCall
from tenancy import connections as tenancy_connections
from tenancy.context import run_context
from tenancy.paths import absolute

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(tenant):
    return services.run_create(tenant=tenant)


def insert(name: str):
    return lambda: ToolCall.objects.create(name=name, args={}, digest="-").seq


def batch_of(run, *works):
    """Let one leader write `works` as one batch (one transaction), as concurrent callers would."""
    jobs = [writer._Job(work) for work in works]
    path = absolute(run.database.path)
    with leases().hold(run.id, path=path, wait_s=5) as lease, run_context(run):
        writer._commit(run, jobs, lease)
    return jobs


def test_a_close_and_a_later_insert_in_one_batch_close_the_run_and_refuse_only_the_insert(run):
    now = timezone.now()
    before, close, after = batch_of(
        run, insert("before"), lambda: services._close(now, "succeeded"), insert("after")
    )
    assert before.committed and before.error is None
    assert close.committed and close.error is None  # the close is not rolled back
    assert isinstance(after.error, RunClosed) and not after.committed
    with run_context(run):
        assert list(ToolCall.objects.values_list("name", flat=True)) == ["before"]
        assert RunInfo.objects.get(id=1).closed_at is not None


def test_a_conflict_in_one_job_keeps_the_others(run):

    def stale():
        raise StaleVersion("stale", current_version=0)

    first, conflict, last = batch_of(run, insert("a"), stale, insert("b"))
    assert isinstance(conflict.error, StaleVersion) and not conflict.committed
    assert first.committed and last.committed
    assert (first.result, last.result) == (1, 2)  # gapless: the failed job took no seq


def test_an_error_with_keyword_only_arguments_reaches_the_caller_intact(run):
    from tenancy.exceptions import SchemaMigrating

    def migrating():
        raise SchemaMigrating("migrating", retry_after_s=7)

    with pytest.raises(SchemaMigrating) as raised:
        writer.write(run, migrating)
    assert raised.value.headers["Retry-After"] == "7"


def test_a_recorded_call_is_audited_as_the_database_stores_it(run):
    """The tool-call row goes to the audit trail without a read-back (tenancy.rows.insert_stored):
    it must be the row exactly as SQLite keeps it, column for column."""
    import json

    from audit.models import RunEntry
    from tenancy.paths import absolute

    args = {"q": "café ☕", "n": 1.5, "none": None, "list": [1, True]}
    call, created = services.tool_call_record(run=run, name="search", args=args)
    assert created and call.seq >= 1 and call.args == args and call.status == "pending"
    with run_context(run):
        body = RunEntry.objects.order_by("-seq").values_list("body", flat=True).first()
    audited = json.loads(body)["row"]
    conn = sqlite3.connect(f"{absolute(run.database.path).as_uri()}?mode=ro", uri=True)
    try:
        cursor = conn.execute("SELECT * FROM runs_toolcall WHERE seq = ?", [call.seq])
        stored = dict(zip([c[0] for c in cursor.description], cursor.fetchone(), strict=True))
    finally:
        conn.close()
    assert audited == stored
    # And the instance the API answers with is the row a fresh read gives.
    with run_context(run):
        fresh = ToolCall.objects.get(seq=call.seq)
    fields = [f.attname for f in ToolCall._meta.concrete_fields]
    assert [getattr(call, f) for f in fields] == [getattr(fresh, f) for f in fields]


@pytest.mark.django_db(transaction=True)  # the writers' threads read the registry
@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_writes_arriving_while_the_leader_waits_for_the_lease_join_its_batch(
    run, backend, settings, redis_url
):
    """The leader takes its batch once it holds the lease (decision 0051): the writes that came
    while another holder wrote go into one transaction, not one each behind the first."""
    settings.REDIS_URL = redis_url if backend == "redis" else ""
    writes = 8
    with run_context(run):
        fence_before = RunInfo.objects.get(id=1).fence
    seqs: list[int] = []
    errors: list[BaseException] = []

    def record() -> None:
        try:
            seqs.append(services.tool_call_record(run=run, name="waited", args={})[0].seq)
        except BaseException as exc:
            errors.append(exc)
        finally:  # this thread's connections (a PostgreSQL control plane's too) end with it
            tenancy_connections.close_all()
            db.connections.close_all()

    _queued_behind_a_holder(run, record, writes)
    assert errors == [] and sorted(seqs) == list(range(1, writes + 1))
    with run_context(run):
        fence_after = RunInfo.objects.get(id=1).fence
    # One transaction wrote them all: one fence step (embedded: +1 a transaction), or the one
    # lease taken after the other holder's (Redis: +1 an acquisition).
    assert fence_after - fence_before == (1 if backend == "embedded" else 2)


@pytest.mark.django_db(transaction=True)  # the writers' threads read the registry
@pytest.mark.parametrize("backend", ["embedded", "redis"])
def test_an_after_hook_runs_once_for_its_batch_with_the_lease_released(
    run, backend, settings, redis_url
):
    """Writes committed together reach their `after` hook in one call, made once the run's lease
    is free again (the hand-off of async calls publishes one message, outside the critical
    section), and each caller is answered only after it. A hook slower than the callers' wait
    bound, while another holder has the lease, answers none of them with an error, and no
    waiting caller leads an empty transaction meanwhile."""
    settings.REDIS_URL = redis_url if backend == "redis" else ""
    settings.RUN_WRITE_WAIT_S = 1.0
    writes = 6
    path = absolute(run.database.path)
    with run_context(run):
        fence_before = RunInfo.objects.get(id=1).fence
    hooked: list[list[int]] = []
    answered_before_hook: list[int] = []

    def after(_run, results: list[int]) -> None:
        # Another holder takes the lease at once (the batch's leader no longer holds it), and
        # keeps it past every caller's wait bound.
        with leases().hold(run.id, path=path, wait_s=0.05):
            time.sleep(1.5)  # longer than RUN_WRITE_WAIT_S
            hooked.append(sorted(results))

    seqs: list[int] = []
    errors: list[BaseException] = []

    def record() -> None:
        try:
            seq = writer.write(run, insert("hooked"), after=after)
            if not hooked:
                answered_before_hook.append(seq)
            seqs.append(seq)
        except BaseException as exc:
            errors.append(exc)
        finally:
            tenancy_connections.close_all()
            db.connections.close_all()

    _queued_behind_a_holder(run, record, writes)
    assert errors == [] and answered_before_hook == []
    assert hooked == [sorted(seqs)] and sorted(seqs) == list(range(1, writes + 1))
    with run_context(run):
        fence_after = RunInfo.objects.get(id=1).fence
    # One transaction, as in the test above: none led by a caller waiting for its hook.
    assert fence_after - fence_before == (1 if backend == "embedded" else 2)


def test_a_failed_after_hook_reaches_its_caller_with_the_write_committed(run):
    def after(_run, results: list[int]) -> None:
        raise ConnectionError("the queue refused the message")

    with pytest.raises(writer.AfterCommitFailed) as caught:
        writer.write(run, insert("kept"), after=after)
    assert isinstance(caught.value.__cause__, ConnectionError)
    seq = caught.value.result
    with run_context(run):
        assert ToolCall.objects.get(seq=seq).name == "kept"  # committed all the same
    # The writer is free: the next write (no hook) goes through.
    assert writer.write(run, insert("next")) == seq + 1


def _queued_behind_a_holder(run, record, writes: int) -> None:
    """Start `writes` threads running `record` while another holder has the run's lease, let go
    once all their writes wait in this process's queue, and wait for the threads."""
    threads = [threading.Thread(target=record) for _ in range(writes)]
    with leases().hold(run.id, path=absolute(run.database.path), wait_s=5):  # writing nothing
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 10
        while len(getattr(writer._queues.get(run.id), "pending", ())) < writes:
            assert time.monotonic() < deadline, "writes were taken before the lease was held"
            time.sleep(0.005)  # polling interval
    for thread in threads:
        thread.join(timeout=30)
