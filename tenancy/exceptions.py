"""Errors of the database engine."""


class NoScopeBound(RuntimeError):
    """A tenant- or run-scoped query ran with nothing bound: a bug, never a fallback."""
