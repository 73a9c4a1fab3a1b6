"""Celery tasks of agent runs. Tasks take ids, never model instances: the worker binds the
tenant and run itself. Celery beat runs `runs_expire_idle` every RUN_EXPIRE_EVERY_S and
`redispatch_lost` every TOOL_REDISPATCH_EVERY_S."""

from typing import Any

from celery import Task, shared_task

from project.exceptions import Unavailable
from runs import queue
from runs.services import events_append
from runs.services import runs_expire_idle as expire_idle

# A worker that could not reach the run's writer (busy, Redis blip) tries again this often.
UNAVAILABLE_RETRIES = 20


@shared_task(name="runs.expire_idle")
def runs_expire_idle() -> dict[str, int]:
    """Expire this node's idle runs (idempotent: overlapping or repeated runs are harmless)."""
    result = expire_idle()
    return {"checked": result.checked, "expired": len(result.expired), "errors": len(result.errors)}


@shared_task(
    name="runs.tool_call_execute",
    bind=True,
    acks_late=True,  # a worker killed mid-call leaves the task to be delivered again
    reject_on_worker_lost=True,
    # The outcome lives in the run database; storing it in Redis too cost a round trip per
    # call. Chords still gather the results: Celery hands them to the chord either way.
    ignore_result=True,
    typing=False,  # the arguments are ours: no inspect.signature bind per call
)
def tool_call_execute(self: Task, tenant_id: str, run_id: str, seq: int) -> dict[str, Any]:
    """Run async tool call `seq` of the run and record its outcome (idempotent: see
    `runs.queue.execute`); retryable failures come back after a backoff."""
    try:
        done = queue.execute(tenant_id=tenant_id, run_id=run_id, seq=seq)
    except Unavailable as exc:
        raise _retry_later(self, exc) from exc
    if done.retry_in is not None:
        # The attempt count lives in the run database; Celery's own count is not the limit.
        raise self.retry(countdown=done.retry_in, max_retries=None)
    return done.as_dict()


@shared_task(
    name="runs.tool_calls_execute",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    typing=False,
)
def tool_calls_execute(self: Task, tenant_id: str, run_id: str, seqs: list[int]) -> None:
    """Run async tool calls of the run that were committed together, handed over in one message
    (`runs.queue.dispatch_many`), and record their outcomes (idempotent, as the single-call
    task). A call that failed in a retryable way comes back on its own, after its backoff."""
    try:
        queue.execute_many(tenant_id=tenant_id, run_id=run_id, seqs=seqs)
    except Unavailable as exc:
        raise _retry_later(self, exc) from exc


def _retry_later(task: Task, exc: Unavailable) -> BaseException:
    """The task's retry after a backoff: the run's writer was busy or Redis unreachable. Past
    its last retry the calls stay queued with no message: `redispatch_lost` sends them again."""
    countdown = queue.backoff_s(task.request.retries + 1)
    return task.retry(exc=exc, countdown=countdown, max_retries=UNAVAILABLE_RETRIES)


@shared_task(name="runs.redispatch_lost")
def redispatch_lost() -> dict[str, int]:
    """Send again the queued calls of this node's active runs whose message was lost (Celery
    beat, every TOOL_REDISPATCH_EVERY_S; idempotent)."""
    done = queue.redispatch_lost()
    return {"checked": done.checked, "dispatched": len(done.dispatched), "errors": len(done.errors)}


@shared_task(name="runs.tool_calls_gather")
def tool_calls_gather(
    results: list[dict[str, Any]], *, tenant_id: str, run_id: str, kind: str
) -> list[int]:
    """Chord callback: append one event `kind` with the calls' outcomes to the run."""
    run = queue.load_run(tenant_id=tenant_id, run_id=run_id)
    if run is None:
        return []
    return events_append(run=run, events=[(kind, {"results": results})])
