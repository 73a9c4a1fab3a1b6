"""Baseline routers for the benchmarks: pin one scope's models to one ordinary Django alias."""

from typing import Any

from tenancy.scopes import Scope, scope_of_model


class PinScopeRouter:
    """Send `scope`'s models to `alias` while `enabled`; defer to the next router otherwise."""

    scope: Scope
    alias: str
    enabled = True

    def _route(self, model: Any) -> str | None:
        return self.alias if self.enabled and scope_of_model(model) is self.scope else None

    def db_for_read(self, model: Any, **hints: Any) -> str | None:
        return self._route(model)

    def db_for_write(self, model: Any, **hints: Any) -> str | None:
        return self._route(model)

    def allow_migrate(self, db: str, app_label: str, **hints: Any) -> bool | None:
        return False if db == self.alias else None


class StaticRouter(PinScopeRouter):
    """bench/provision.py: tenant models to one static database, toggled between rounds."""

    scope, alias, enabled = Scope.TENANT, "static", False
