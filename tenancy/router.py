"""The one place that turns the bound scope into a database alias.

Control models go to `default`. Tenant- and run-scoped models go to the bound tenant's or run's
database; with nothing bound the router raises `NoScopeBound`: returning None would make Django
fall back to `default` and write tenant rows into the control plane.
"""

from typing import Any

from django.apps import apps
from django.conf import settings
from django.db import DEFAULT_DB_ALIAS

from tenancy import restored
from tenancy.connections import connection_for, touch
from tenancy.context import current_run, current_tenant
from tenancy.exceptions import NoScopeBound
from tenancy.gate import database_checked_at_open
from tenancy.paths import absolute, alias_scope, run_alias, tenant_alias
from tenancy.scopes import Scope, scope_of_model


def bound_alias(scope: Scope) -> str:
    """Return (and open, in this thread) the alias of the database bound for `scope`.

    A cached connection is checked against its file first (`touch`): a deleted, replaced or
    damaged file raises `DatabaseUnavailable` (503) instead of being written to.
    """
    if scope is Scope.TENANT:
        tenant = current_tenant()
        alias = tenant_alias(tenant.id)
        if not touch(alias, tenant.database):
            connection_for(alias, absolute(tenant.database.path), database=tenant.database)
            database_checked_at_open(alias=alias, database=tenant.database)
        return alias
    if scope is Scope.RUN:
        run = current_run()
        if getattr(run, "archived_at", None) is not None:  # its live file is gone: read a copy
            return restored.bound_alias(run)
        alias = run_alias(run.id)
        if not touch(alias, run.database):
            connection_for(
                alias,
                absolute(run.database.path),
                max_bytes=run.max_db_bytes,
                database=run.database,
                synchronous=settings.RUN_SQLITE_SYNCHRONOUS,
            )
            database_checked_at_open(alias=alias, database=run.database)
        return alias
    return DEFAULT_DB_ALIAS


class ScopeRouter:
    def _route(self, model: Any, hints: dict[str, Any]) -> str:
        scope = scope_of_model(model)
        alias = bound_alias(scope)
        instance = hints.get("instance")
        stored_in = getattr(getattr(instance, "_state", None), "db", None)
        if scope is not Scope.CONTROL and stored_in is not None and stored_in != alias:
            raise NoScopeBound(
                f"{model.__name__} was loaded from {stored_in!r} but {alias!r} is bound; "
                "rows never move between tenant or run databases."
            )
        return alias

    def db_for_read(self, model: Any, **hints: Any) -> str:
        return self._route(model, hints)

    def db_for_write(self, model: Any, **hints: Any) -> str:
        return self._route(model, hints)

    def allow_relation(self, obj1: Any, obj2: Any, **hints: Any) -> bool | None:
        if scope_of_model(obj1) is Scope.CONTROL and scope_of_model(obj2) is Scope.CONTROL:
            return None
        return bool(obj1._state.db == obj2._state.db)

    def allow_migrate(
        self, db: str, app_label: str, model_name: str | None = None, **hints: Any
    ) -> bool:
        """Keep each scope's tables in its own databases only.

        `RunPython`/`RunSQL` operations default to the control plane; pass
        `hints={"scope": "tenant"}` (or "run") to run them on tenant or run databases.
        """
        if "model" in hints:
            scope = scope_of_model(hints["model"])
        elif model_name is not None:
            try:
                scope = scope_of_model(apps.get_model(app_label, model_name))
            except LookupError:
                scope = Scope(hints.get("scope", Scope.CONTROL))
        else:
            scope = Scope(hints.get("scope", Scope.CONTROL))
        return alias_scope(db) is scope


__all__ = ["NoScopeBound", "ScopeRouter", "bound_alias"]
