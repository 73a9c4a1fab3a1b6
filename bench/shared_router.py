"""Baseline router for bench/http.py: every run-scoped row goes to one shared database."""

from typing import Any

from tenants.scopes import Scope, scope_of_model


class SharedRunsRouter:
    def _route(self, model: Any) -> str | None:
        return "shared" if scope_of_model(model) is Scope.RUN else None

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._route(model)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._route(model)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return False if db == "shared" else None
