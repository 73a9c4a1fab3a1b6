"""Opaque pagination cursors: a JSON value, base64url-encoded."""

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from typing import Any, TypeVar, cast

from django.conf import settings
from django.db.models import F, Func, IntegerField, Model, QuerySet, Value
from django.db.models.functions import Coalesce, Length

from project import strictjson
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
        return parse(strictjson.loads(raw, what="Cursor"))
    except (binascii.Error, strictjson.InvalidJSON, ValueError, TypeError) as exc:
        raise InvalidInput(
            f"Cursor {cursor[:80]!r} is invalid: pass the `next` value of the previous page."
        ) from exc


# What one item costs besides its JSON columns (ids, status, timestamps, numbers, punctuation).
ITEM_OVERHEAD_BYTES = 512
# Rows fetched from SQLite at a time while a page fills: at most this many beyond the budget.
_CHUNK = 8


def json_size(value: Any) -> int:
    """Return the size of `value` as the API encodes it (`json.dumps`, ASCII)."""
    return len(json.dumps(value))


def with_json_bytes(rows: "QuerySet[M]", *columns: str) -> "QuerySet[M]":
    """Annotate each row with `json_bytes`: an upper bound of its JSON `columns` as answered.

    The API answers with `json.dumps` (ASCII: a non-ASCII character becomes a 6- or 12-byte
    escape), while values may be stored either escaped (the ORM) or as UTF-8 (event payloads,
    `runs.services.events_append`). With `b` the stored UTF-8 bytes and `c` the characters,
    `b + 4 * (b - c)` bounds the answer for both: an ASCII character costs 1, and a 2-, 3- or
    4-byte character at least its 6 or 12 escaped bytes.
    """
    total: Any = Value(0)
    for column in columns:
        stored_bytes = Func(
            F(column), template="LENGTH(CAST(%(expressions)s AS BLOB))", output_field=IntegerField()
        )
        characters = Length(F(column))
        bound = stored_bytes + Value(4) * (stored_bytes - characters)
        total = total + Coalesce(bound, Value(0))
    return cast("QuerySet[M]", rows.annotate(json_bytes=total))


def page_within_budget(
    rows: "QuerySet[M]", *, limit: int, size: Callable[[M], int] | None = None
) -> tuple[list[M], M | None]:
    """Return the first rows of an ordered queryset that fit `limit` and the byte budget, and
    the last one if more follow.

    A page holds at most `limit` items and stops before its items' JSON would pass
    `API_MAX_PAGE_BYTES`; the first item always fits, so every page makes progress. Rows are
    read a few at a time, so a page of large items never loads the ones it will not send.
    `size` defaults to the `json_bytes` annotation of `with_json_bytes`.
    """
    measure = size or (lambda row: int(getattr(row, "json_bytes", 0)))
    return _take(rows[: limit + 1].iterator(chunk_size=_CHUNK), limit, measure)


def _take(rows: Iterable[M], limit: int, size: Callable[[M], int]) -> tuple[list[M], M | None]:
    budget = settings.API_MAX_PAGE_BYTES
    page: list[M] = []
    used = 0
    for row in rows:
        cost = size(row) + ITEM_OVERHEAD_BYTES
        if len(page) == limit or (page and used + cost > budget):
            return page, page[-1]
        page.append(row)
        used += cost
    return page, None
