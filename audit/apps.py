from django.apps import AppConfig


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = "Audit trail"

    def ready(self) -> None:
        from audit.archive import on_run_finished
        from runs.signals import run_finished

        run_finished.connect(on_run_finished, dispatch_uid="audit.archive_on_finish")
