"""Errors of the database engine."""

from project.exceptions import ApplicationError


class NoScopeBound(RuntimeError):
    """A tenant- or run-scoped query ran with nothing bound: a bug, never a fallback."""


class DatabaseQuarantined(ApplicationError):
    """The bound database is quarantined in the registry: it is not served until fixed."""

    status = 503
    code = "database_quarantined"


class SchemaMigrating(ApplicationError):
    """The bound database is behind the code's schema and a migration holds it: retry."""

    status = 503
    code = "schema_migrating"

    def __init__(self, message: str, *, retry_after_s: int) -> None:
        super().__init__(message, retry_after=retry_after_s)


class RolloutLocked(Exception):
    """Another process holds this node's rollout lock; `holder` says who."""

    def __init__(self, holder: str, waited_s: float) -> None:
        super().__init__(
            f"Another rollout holds this node's lock ({holder}); waited {waited_s:g} s."
        )
        self.holder = holder
        self.waited_s = waited_s


class ReplayMismatch(Exception):
    """A database did not end where the scratch copy did after a replay; names the difference."""


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
