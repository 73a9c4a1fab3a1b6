"""Opaque pagination cursors: a JSON value, base64url-encoded."""

import base64
import binascii
import json
from collections.abc import Callable
from typing import Any, TypeVar

from django.db.models import Model, QuerySet

from project.exceptions import InvalidInput

T = TypeVar("T")
M = TypeVar("M", bound=Model)


def cursor_encode(value: Any) -> str:
    raw = json.dumps(value, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def cursor_decode(cursor: str, parse: Callable[[Any], T]) -> T:
    """Return `parse(value)` for the value `cursor` carries; any failure is a 422 naming it."""
    try:
        raw = base64.b64decode(cursor + "=" * (-len(cursor) % 4), altchars=b"-_", validate=True)
        return parse(json.loads(raw))
    except (binascii.Error, ValueError, TypeError) as exc:  # JSON and Unicode errors included
        raise InvalidInput(
            f"Cursor {cursor[:80]!r} is invalid: pass the `next` value of the previous page."
        ) from exc


def page_of(rows: "QuerySet[M]", limit: int) -> tuple[list[M], M | None]:
    """Return up to `limit` rows of an ordered queryset, and the last one if more follow.

    One row beyond the page is fetched to know whether there is a next page.
    """
    page = list(rows[: limit + 1])
    if len(page) > limit:
        return page[:limit], page[limit - 1]
    return page, None
