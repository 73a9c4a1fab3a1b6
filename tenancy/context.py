"""The only module that touches the scope `ContextVar`s.

Code enters a scope with `with tenant_context(tenant):` (and, for runs, `with run_context(run):`);
the previous binding is restored on exit. Context variables follow the request's thread under
gunicorn and are copied into `sync_to_async`/`async_to_sync` calls by asgiref.
"""

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from tenancy.exceptions import NoScopeBound

if TYPE_CHECKING:
    from tenants.models import Tenant

_tenant: ContextVar["Tenant | None"] = ContextVar("tenant", default=None)
_run: ContextVar[Any] = ContextVar("run", default=None)


@contextmanager
def tenant_context(tenant: "Tenant") -> Iterator["Tenant"]:
    """Bind `tenant` for the block; tenant-scoped models then read and write its database."""
    token = _tenant.set(tenant)
    try:
        yield tenant
    finally:
        _tenant.reset(token)


@contextmanager
def run_context(run: Any) -> Iterator[Any]:
    """Bind `run` (and its tenant) for the block; run-scoped models then use its database."""
    tenant_token = _tenant.set(run.tenant)
    run_token = _run.set(run)
    try:
        yield run
    finally:
        _run.reset(run_token)
        _tenant.reset(tenant_token)


def current_tenant() -> "Tenant":
    """Return the bound tenant, or raise `NoScopeBound` naming how to bind one."""
    tenant = _tenant.get()
    if tenant is None:
        raise NoScopeBound(
            "No tenant is bound: wrap the code in `with tenant_context(tenant):` "
            "(API requests bind the API key's tenant automatically)."
        )
    return tenant


def current_run() -> Any:
    """Return the bound run, or raise `NoScopeBound` naming how to bind one."""
    run = _run.get()
    if run is None:
        raise NoScopeBound("No run is bound: wrap the code in `with run_context(run):`.")
    return run


def bound_tenant_id() -> str | None:
    """Return the bound tenant's id or None; for logging only, never for routing."""
    tenant = _tenant.get()
    return None if tenant is None else tenant.id


def bound_run_id() -> str | None:
    """Return the bound run's id or None; for logging only, never for routing."""
    run = _run.get()
    return None if run is None else run.id
