"""Errors of the database engine."""

from project.exceptions import ApplicationError


class NoScopeBound(RuntimeError):
    """A tenant- or run-scoped query ran with nothing bound: a bug, never a fallback."""


class DatabaseUnavailable(ApplicationError):
    """A tenant or run database cannot be used safely: missing, replaced, damaged, read-only.

    Raised before anything is written to a file that is not the registered one; the request
    answers 503 and the connection involved is closed, never reused.
    """

    status = 503
    code = "database_unavailable"


class ConnectionsExhausted(ApplicationError):
    """This process has no descriptor left for another database: retry (another process may)."""

    status = 503
    code = "unavailable"
