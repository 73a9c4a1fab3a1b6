"""One renderer for every API error: `{"error": {"code": ..., "message": ...}}`."""

from typing import Any

from django.http import JsonResponse


def error_response(status: int, code: str, message: str, **extra: Any) -> JsonResponse:
    body: dict[str, Any] = {"code": code, "message": message, **extra}
    return JsonResponse({"error": body}, status=status)


# SQLite's primary result codes for "try again": another connection holds the lock.
_TRANSIENT_SQLITE_CODES = frozenset({5, 6})  # SQLITE_BUSY, SQLITE_LOCKED
_CANTOPEN = 14  # SQLITE_CANTOPEN


def sqlite_error_code(exc: BaseException) -> int | None:
    """Return SQLite's primary result code behind `exc` (Django wraps sqlite3's errors), if any.

    Decided by the error SQLite reported (`sqlite_errorcode`), never by the message text.
    """
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        code = getattr(current, "sqlite_errorcode", None)
        if isinstance(code, int):
            return code & 0xFF  # extended codes carry the primary code in the low byte
        current = current.__cause__ or current.__context__
    return None


def is_sqlite_busy(exc: BaseException) -> bool:
    """Return True if `exc` is SQLite's busy/locked: retry later, the database is fine."""
    return sqlite_error_code(exc) in _TRANSIENT_SQLITE_CODES


def is_sqlite_unavailable(exc: BaseException) -> bool:
    """Return True if `exc` means "retry later": busy, locked, or the file could not be opened."""
    code = sqlite_error_code(exc)
    return code in _TRANSIENT_SQLITE_CODES or code == _CANTOPEN
