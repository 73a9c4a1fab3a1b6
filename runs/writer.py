"""The run's single writer: group commit under the run's lease, fenced in the database.

Every write to a run database goes through `write(run, work)`. Within a process, callers of one
run queue up; one of them (the leader) takes the run's lease (`runs.leases`), then every write
queued by then (those that came while it waited included), and runs them all in ONE
`BEGIN IMMEDIATE` transaction, each in its own savepoint, then wakes the callers. Across
processes the lease serialises the leaders: exactly one holder writes a run at a time. Each
caller is answered only after the transaction holding its write committed, so a 2xx means
committed; a write that fails on its own (a conflict, an unknown seq) rolls back to its
savepoint and does not disturb the others.

The transaction first records the lease's fencing token in `runs_runinfo.fence` and refuses a
token lower than the highest that has written; before COMMIT the lease is confirmed (and
renewed). A holder that stalled past its TTL therefore cannot commit (`LeaseLost`), and nothing
of its batch is in the database.

A write may come with an `after` hook: the leader calls it once per batch, with the results of
the batch's committed writes that came with it, after the lease is released (the hand-off of
async tool calls: one message for the calls a batch committed).

Waits are bounded: a write that no leader took within `RUN_WRITE_WAIT_S` is withdrawn and
answered 503 `run_busy` (it was never written); a lease not granted within the same bound is
`run_busy` too; Redis down is `dependency_unavailable`. See
docs/decisions/0029-single-writer-group-commit.md.
"""

import copy
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from django.conf import settings
from django.db import DatabaseError, connections, router, transaction

from project.exceptions import ApplicationError, TooLarge
from runs.exceptions import AfterCommitFailed, LeaseLost, RunBusy, RunClosed
from runs.leases import Lease, leases
from tenancy import faults
from tenancy.context import run_context
from tenancy.paths import absolute

if TYPE_CHECKING:
    from runs.models import Run

T = TypeVar("T")

logger = logging.getLogger(__name__)


After = Callable[["Run", list[Any]], None]


@dataclass(eq=False)
class _Job:
    work: Callable[[], Any]
    after: After | None = None
    result: Any = None
    error: BaseException | None = None
    after_error: BaseException | None = None
    after_done: bool = False  # its hook was called (by its batch's leader, or by itself)
    taken: bool = False  # in a leader's batch: it will be answered, no longer withdrawn
    committed: bool = False  # its transaction committed (set by the leader)
    done: bool = False


class _Queue:
    """The writes of one run waiting in this process, and whether a leader is writing."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.pending: deque[_Job] = deque()
        self.leading = False
        self.users = 0


_queues: dict[str, _Queue] = {}
_queues_lock = threading.Lock()


@contextmanager
def _queue(run_id: str) -> Iterator[_Queue]:
    with _queues_lock:
        queue = _queues.setdefault(run_id, _Queue())
        queue.users += 1
    try:
        yield queue
    finally:
        with _queues_lock:
            queue.users -= 1
            if queue.users == 0:
                del _queues[run_id]


def write(run: "Run", work: Callable[[], T], *, after: After | None = None) -> T:
    """Run `work()` in the run's next write transaction; return its result once committed.

    `work` runs in another thread (the leader's) with the run bound; it may use the ORM on
    run-scoped models. An `ApplicationError` it raises rolls back its own writes only and is
    raised here; any other failure fails the whole transaction and is raised to every caller.

    `after(run, results)`, if given, is called by the leader once per batch with the results of
    every committed write of the batch given the same `after`, once the batch committed and
    the lease is released, before those callers are answered: one call for what many callers
    wrote together (the hand-off of async tool calls: one message for a batch). It must not
    write the run. If it raises, each of those callers gets `AfterCommitFailed` (their writes
    are committed) with the error as its cause.
    """
    if not run.is_active:
        raise RunClosed(f"Run {run.id} is {run.status}; it takes no more writes.")
    job = _Job(work, after)
    deadline = time.monotonic() + settings.RUN_WRITE_WAIT_S
    with _queue(run.id) as queue:
        with queue.cond:
            queue.pending.append(job)
        while _wait_or_lead(queue, job, deadline, run.id):
            later: list[_Job] = []
            try:
                later = _lead(run, queue, job, deadline)
            finally:
                try:
                    with queue.cond:
                        queue.leading = False
                        queue.cond.notify_all()
                finally:
                    if later:  # the next leader writes meanwhile
                        try:
                            _run_after(run, later)
                        finally:
                            _answer(queue, later)
            if job.done:
                break
    if job.error is not None:
        raise _fresh(job.error) from job.error.__cause__
    if job.committed and job.after is not None and not job.after_done:
        _run_after(run, [job])  # its leader was interrupted before the hooks: run its own
    if job.committed and job.after_error is not None:
        raise AfterCommitFailed(job.result) from _fresh(job.after_error)
    if not job.committed:  # the leader was interrupted (BaseException) before an outcome
        raise RunBusy(
            f"The writer of run {run.id} was interrupted; retry (with the same idempotency key).",
            retry_after=1,
        )
    return job.result  # type: ignore[no-any-return]


def _fresh(error: BaseException) -> BaseException:
    """Return a copy of `error` to raise in this thread: one batch error is raised in many
    threads, and re-raising one object grows its traceback with every thread's frames."""
    try:
        return copy.copy(error)
    except Exception:  # an exception class that cannot be rebuilt from its args
        return error.with_traceback(None)


def _wait_or_lead(queue: _Queue, job: _Job, deadline: float, run_id: str) -> bool:
    """Wait until `job` is answered (False) or this thread is to lead (True)."""
    with queue.cond:
        # A taken write is answered by its batch's leader (after the batch and its hooks); it
        # never leads: a leader taking nothing would write an empty transaction, and a lease
        # it fails to get would be reported as this committed write's error.
        while not job.done and (queue.leading or job.taken):
            remaining = deadline - time.monotonic()
            if remaining <= 0 and not job.taken:
                queue.pending.remove(job)
                raise RunBusy(
                    f"Run {run_id} is busy: this write waited "
                    f"{settings.RUN_WRITE_WAIT_S:g} s for its writer and was not made. Retry.",
                    retry_after=1,
                )
            # A taken job is answered when its batch ends, which the lease wait and SQLite's
            # busy timeout bound, and its hook has run (a publish: as long as the broker takes
            # to answer or refuse); poll anyway so a lost wake-up cannot hang a request.
            queue.cond.wait(remaining if not job.taken and remaining > 0 else 0.5)
        if job.done:
            return False
        queue.leading = True
        linger = settings.RUN_WRITE_LINGER_MS / 1000
        if linger > 0 and len(queue.pending) < settings.RUN_WRITE_BATCH_MAX:
            queue.cond.wait(linger)  # let a few more writes join this transaction
        return True


def _take(queue: _Queue) -> list[_Job]:
    """Take the next batch: the writes waiting now, oldest first, at most RUN_WRITE_BATCH_MAX."""
    with queue.cond:
        size = min(len(queue.pending), settings.RUN_WRITE_BATCH_MAX)
        batch = [queue.pending.popleft() for _ in range(size)]
        for member in batch:
            member.taken = True
        return batch


def _lead(run: "Run", queue: _Queue, job: _Job, deadline: float) -> list[_Job]:
    """Take the run's lease, then the writes waiting by then, and write them as one batch.

    The batch is taken once the lease is held, not before: the writes that arrived while the
    other holder wrote join this transaction instead of waiting for the next one (decision
    0051). The lease is waited for until the leader's own deadline (at least a moment), so a
    write's whole wait is bounded by `RUN_WRITE_WAIT_S` plus SQLite's busy timeout at BEGIN.
    If the lease is not granted, nothing was taken: the leader's own write fails, the others
    wait on (one of them leads next).

    Every write is answered here but the committed ones with an `after` hook: those are
    returned, for the caller to run their hooks once it no longer leads, then answer them.
    """
    path = absolute(run.database.path)
    wait_s = max(0.05, deadline - time.monotonic())
    batch: list[_Job] = []
    try:
        with leases().hold(run.id, path=path, wait_s=wait_s) as lease, run_context(run):
            batch = _take(queue)
            try:
                _commit(run, batch, lease)
            finally:
                _answer(queue, [member for member in batch if not _has_after(member)])
    except Exception as exc:
        if batch:  # answered already: a failure after its outcome (releasing) is not its own
            logger.exception("run %s: the writer failed after its batch was answered", run.id)
        else:
            with queue.cond:
                if not job.taken:
                    queue.pending.remove(job)
                job.error, job.done = exc, True
    except BaseException:
        _answer(queue, batch)  # a committed write's hook not called: its caller calls it
        raise
    return [member for member in batch if _has_after(member)]


def _has_after(job: _Job) -> bool:
    return job.after is not None and job.committed


def _answer(queue: _Queue, jobs: list[_Job]) -> None:
    if not jobs:
        return
    with queue.cond:
        for member in jobs:
            member.done = True
        queue.cond.notify_all()


def _run_after(run: "Run", jobs: list[_Job]) -> None:
    """Call each distinct `after` hook once with the results of its committed writes."""
    hooks: dict[After, list[_Job]] = {}
    for job in jobs:
        if job.after is not None:
            hooks.setdefault(job.after, []).append(job)
    for hook, members in hooks.items():
        try:
            hook(run, [member.result for member in members])
        except Exception as exc:
            logger.exception("run %s: an after-commit hook failed", run.id)
            for member in members:
                member.after_error = exc
        for member in members:  # not after a BaseException: each caller calls its own
            member.after_done = True


def _commit(run: "Run", batch: list[_Job], lease: Lease) -> None:
    """Write `batch` in one transaction under the held `lease`; record each job's outcome."""
    try:
        alias = router.db_for_write(_run_info())
        try:
            with transaction.atomic(using=alias):
                _fence(alias, run, lease)
                for job in batch:
                    _run_job(run, alias, job)
                if not lease.confirm():
                    raise LeaseLost(
                        f"The lease on run {run.id} expired before its writes committed "
                        "(the writer stalled); nothing was written. Retry.",
                        retry_after=0,
                    )
        except DatabaseError as exc:
            translated = _translated(run, exc)
            if translated is exc:
                raise
            raise translated from exc
        # The file may have been deleted or replaced between the check before BEGIN and the
        # COMMIT: then the commit went to a file that is no longer the registered one.
        verify = getattr(connections[alias], "verify", None)
        if verify is not None:
            verify()
    except Exception as exc:
        for job in batch:
            job.result = None
            if not isinstance(job.error, ApplicationError):
                job.error = exc
        return
    for job in batch:
        job.committed = job.error is None


def _run_job(run: "Run", alias: str, job: _Job) -> None:
    """Run one job in its own savepoint; a failure of its own rolls back only its writes.

    The savepoint is SQLite's, on the raw connection (Django's `atomic()` costs several times
    more, on the run's critical section); a Django `atomic()` inside the job nests in it.
    """
    connection = connections[alias]
    raw = connection.connection
    with connection.wrap_database_errors:
        raw.execute("SAVEPOINT job")
    try:
        job.result = job.work()
    except ApplicationError as exc:
        _roll_back_job(connection)
        job.result, job.error = None, exc
    except DatabaseError as exc:
        if not raw.in_transaction:
            raise  # SQLite rolled the whole transaction back: the batch fails
        translated = _translated(run, exc)  # the closed-run triggers, the size limit
        if translated is exc:
            raise
        _roll_back_job(connection)
        job.result, job.error = None, translated
    else:
        with connection.wrap_database_errors:
            raw.execute("RELEASE job")


def _roll_back_job(connection: Any) -> None:
    """Undo one job's writes; if that fails, the batch fails (the error propagates)."""
    with connection.wrap_database_errors:
        connection.connection.execute("ROLLBACK TO job")
        connection.connection.execute("RELEASE job")
    connection.needs_rollback = False  # what Django's atomic() does after the same rollback


def _run_info() -> Any:
    from runs.models import RunInfo

    return RunInfo


def _fence(alias: str, run: "Run", lease: Lease) -> None:
    """Record the lease's token as the highest that has written, or refuse a lower one."""
    with connections[alias].cursor() as cursor:
        if lease.token is None:  # embedded: the OS lock cannot be lost while held
            cursor.execute("UPDATE runs_runinfo SET fence = fence + 1 WHERE id = 1")
            return
        cursor.execute(
            "UPDATE runs_runinfo SET fence = %s WHERE id = 1 AND fence <= %s",
            [lease.token, lease.token],
        )
        if cursor.rowcount == 1:
            return
        cursor.execute("SELECT fence FROM runs_runinfo WHERE id = 1")
        (highest,) = cursor.fetchone()
        if not lease.confirm(ask=True):  # a real round trip before trusting our own token
            raise LeaseLost(
                f"Run {run.id} was written by a newer lease holder (token {highest} > "
                f"{lease.token}); this writer was fenced off and wrote nothing. Retry.",
                retry_after=0,
            )
        # Still ours, yet the database saw a higher token: Redis lost its counters (restarted
        # empty). Move the counter past the database's and write with that.
        lease.token = leases().raise_fence(run.id, above=int(highest))
        cursor.execute("UPDATE runs_runinfo SET fence = %s WHERE id = 1", [lease.token])


def _translated(run: "Run", exc: DatabaseError) -> Exception:
    """Map SQLite's verdict (its result code, never the message) to the API's errors."""
    if faults.is_trigger_abort(exc):  # the closed-run triggers (decision 0009)
        return RunClosed(f"Run {run.id} was completed; it takes no more writes.")
    if faults.is_full(exc):  # max_page_count (decision 0010)
        return TooLarge(
            f"Run {run.id}'s database reached its limit of {run.max_db_bytes} bytes.",
            code="run_database_full",
        )
    if faults.is_busy(exc):
        return RunBusy(
            f"Run {run.id}'s database stayed locked past the busy timeout; nothing was written.",
            retry_after=1,
        )
    return exc
