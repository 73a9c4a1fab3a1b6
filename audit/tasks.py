"""Celery tasks of the audit app: archiving finished runs."""

from celery import shared_task

from audit.archive import run_archive


@shared_task(
    name="audit.archive_run",
    autoretry_for=(Exception,),
    retry_backoff=True,
    max_retries=5,
    acks_late=True,
)
def archive_run(run_id: str) -> dict[str, object]:
    """Archive a finished run (idempotent: a retry or a duplicate finds the work done)."""
    done = run_archive(run_id=run_id)
    return {"run": done.run_id, "key": done.key, "bytes": done.size, "action": done.action}
