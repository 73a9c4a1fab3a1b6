"""Aliases and file paths of tenant and run databases, built only from server-generated ids."""

from pathlib import Path

from django.conf import settings

from tenancy.ids import is_id, new_id
from tenancy.scopes import Scope


def _checked(identifier: str) -> str:
    # A last line of defence against path injection: only ids from `tenancy.ids.new_id`.
    if not is_id(identifier):
        raise ValueError(f"{identifier!r} is not a server-generated id; refusing to build a path.")
    return identifier


def tenant_alias(tenant_id: str) -> str:
    return f"{Scope.TENANT.value}__{_checked(tenant_id)}"


def run_alias(run_id: str) -> str:
    return f"{Scope.RUN.value}__{_checked(run_id)}"


def archived_run_alias(run_id: str) -> str:
    """Return the alias of the read-only copy of an archived run (never its live file's)."""
    return f"{Scope.RUN.value}__{_checked(run_id)}__archived"


def scratch_alias(kind: Scope) -> str:
    """Return a fresh alias of scope `kind` for a short-lived connection (builds, plans)."""
    return f"{kind.value}__{new_id('tmp')}"


def alias_scope(alias: str) -> Scope:
    """Return the scope of the databases an alias names (`default` and others: control)."""
    prefix = alias.split("__", 1)[0] if "__" in alias else ""
    return Scope(prefix) if prefix in (Scope.TENANT, Scope.RUN) else Scope.CONTROL


def tenant_db_relpath(tenant_id: str) -> str:
    return f"tenants/{_checked(tenant_id)}/tenant.sqlite3"


def run_db_relpath(tenant_id: str, run_id: str) -> str:
    return f"tenants/{_checked(tenant_id)}/runs/{_checked(run_id)}.sqlite3"


def absolute(relpath: str) -> Path:
    """Return the absolute path of a registry path (stored relative to DATA_DIR)."""
    return Path(settings.DATA_DIR) / relpath


def restored_dir() -> Path:
    return Path(settings.DATA_DIR) / "restored"


def scratch_dir() -> Path:
    """Where snapshots and uploads are assembled before they move (same filesystem as data)."""
    return Path(settings.DATA_DIR) / "tmp"


def templates_dir() -> Path:
    return Path(settings.DATA_DIR) / "templates"
