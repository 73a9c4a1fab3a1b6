"""Celery tasks of agent runs. Celery beat runs `runs_expire_idle` every RUN_EXPIRE_EVERY_S."""

from celery import shared_task

from runs.services import runs_expire_idle as expire_idle


@shared_task(name="runs.expire_idle")
def runs_expire_idle() -> dict[str, int]:
    """Expire this node's idle runs (idempotent: overlapping or repeated runs are harmless)."""
    result = expire_idle()
    return {"checked": result.checked, "expired": len(result.expired), "errors": len(result.errors)}
