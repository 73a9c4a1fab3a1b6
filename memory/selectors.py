"""Reads of tenant memory, in the bound tenant's database."""

from typing import Any

from memory.models import MemoryEntry
from memory.services import memory_key_check
from project.exceptions import NotFound
from project.pagination import cursor_decode, cursor_encode, page_within_budget, with_json_bytes


def memory_get(*, key: str) -> MemoryEntry:
    memory_key_check(key)
    entry = MemoryEntry.objects.filter(key=key).first()
    if entry is None:
        raise NotFound(f"No memory entry with key {key!r}.")
    return entry


def memory_list(
    *, prefix: str = "", limit: int = 50, cursor: str | None = None
) -> tuple[list[MemoryEntry], str | None]:
    """Return entries whose key starts with `prefix`, in key order, and a cursor.

    A page stops at `limit` entries or at the page byte budget (`project.pagination`).
    """
    rows = MemoryEntry.objects.order_by("key")
    if prefix:
        # A key range, not LIKE: SQLite's LIKE ignores case and keys are case-sensitive.
        rows = rows.filter(key__gte=prefix, key__lt=prefix + "\U0010ffff")
    if cursor:
        rows = rows.filter(key__gt=cursor_decode(cursor, _key))
    page, last = page_within_budget(with_json_bytes(rows, "value"), limit=limit)
    return page, (cursor_encode(last.key) if last else None)


def _key(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError("a memory cursor carries a key")
    return value
