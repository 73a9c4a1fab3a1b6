"""The three data scopes and the markers a model uses to declare its own.

A model declares its scope by inheriting a marker (`TenantScoped`, `RunScoped`); models without
one (Django's own apps included) live in the control plane. The markers are plain mixins, not
abstract models, so migrations record them in `bases=` and historical models keep the scope.
"""

from enum import StrEnum
from typing import Any


class Scope(StrEnum):
    CONTROL = "control"
    TENANT = "tenant"
    RUN = "run"


class TenantScoped:
    """Mixin: rows of this model live in the bound tenant's database."""

    db_scope = Scope.TENANT


class RunScoped:
    """Mixin: rows of this model live in the bound run's database."""

    db_scope = Scope.RUN


def scope_of_model(model: Any) -> Scope:
    """Return the scope a model class (current or historical) declares."""
    return getattr(model, "db_scope", Scope.CONTROL)
