"""Baseline router for the bench: tenant-scoped models to one static database, when enabled."""

from typing import Any

from tenants.scopes import Scope, scope_of_model


class StaticRouter:
    enabled = False

    def _route(self, model: Any) -> str | None:
        if self.enabled and scope_of_model(model) is Scope.TENANT:
            return "static"
        return None

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._route(model)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._route(model)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return False if db == "static" else None
