from django.apps import AppConfig


class RunsConfig(AppConfig):
    name = "runs"
    verbose_name = "Agent runs"

    def ready(self) -> None:
        from runs.invariants import closed_run_triggers_present
        from tenancy.scopes import Scope
        from tenancy.templates import template_checks

        if closed_run_triggers_present not in template_checks[Scope.RUN]:
            template_checks[Scope.RUN].append(closed_run_triggers_present)
