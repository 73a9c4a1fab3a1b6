"""Reads of the control plane and of tenant memory."""

import base64
import binascii

from tenants.exceptions import InvalidInput, NotFound
from tenants.models import MemoryEntry
from tenants.services import memory_key_check


def memory_get(*, key: str) -> MemoryEntry:
    memory_key_check(key)
    entry = MemoryEntry.objects.filter(key=key).first()
    if entry is None:
        raise NotFound(f"No memory entry with key {key!r}.")
    return entry


def memory_list(
    *, prefix: str = "", limit: int = 50, cursor: str | None = None
) -> tuple[list[MemoryEntry], str | None]:
    """Return up to `limit` entries whose key starts with `prefix`, in key order, and a cursor."""
    rows = MemoryEntry.objects.order_by("key")
    if prefix:
        # A key range, not LIKE: SQLite's LIKE ignores case and keys are case-sensitive.
        rows = rows.filter(key__gte=prefix, key__lt=prefix + "\U0010ffff")
    if cursor:
        rows = rows.filter(key__gt=_decode_cursor(cursor))
    page = list(rows[: limit + 1])
    more = len(page) > limit
    page = page[:limit]
    return page, (_encode_cursor(page[-1].key) if more else None)


def _encode_cursor(key: str) -> str:
    return base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str) -> str:
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        return base64.b64decode(padded, altchars=b"-_", validate=True).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError) as exc:
        raise InvalidInput(
            f"Cursor {cursor[:80]!r} is invalid: pass the `next` value of the previous page."
        ) from exc
