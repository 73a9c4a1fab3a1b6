from typing import Any

from django.apps import AppConfig


class TenancyConfig(AppConfig):
    """The database engine: connections, routing, templates, provisioning, fleet migrations."""

    name = "tenancy"
    verbose_name = "Database engine"

    def ready(self) -> None:
        from celery.signals import task_postrun
        from django.core.signals import request_finished

        # A request's or a task's tenant/run connections go back to the process's pool.
        request_finished.connect(_give_back, dispatch_uid="tenancy.give_back")
        task_postrun.connect(_give_back, dispatch_uid="tenancy.give_back", weak=False)


def _give_back(**kwargs: Any) -> None:
    task = kwargs.get("task")
    if task is not None and getattr(task.request, "is_eager", False):
        return  # an eager task (embedded mode) ran inside the caller's request: not its end
    from tenancy.connections import give_back

    give_back()
