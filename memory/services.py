"""Writes of tenant memory, in the bound tenant's database."""

import re
from typing import Any

from django.conf import settings
from django.db import router, transaction
from django.utils import timezone

from memory.models import MemoryEntry
from project.exceptions import InvalidInput, NotFound
from project.limits import check_json_size

MEMORY_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/@+-]{0,199}$")
MEMORY_KEY_RULE = (
    "1-200 characters from A-Z a-z 0-9 and _ . : / @ + -, not starting with a punctuation "
    "mark other than _"
)


def memory_key_check(key: str) -> str:
    if not MEMORY_KEY_RE.match(key):
        raise InvalidInput(f"Memory key {key[:220]!r} is invalid: {MEMORY_KEY_RULE}.")
    return key


def memory_put(*, key: str, value: Any) -> tuple[MemoryEntry, bool]:
    """Store `value` under `key` in the bound tenant's memory; return (entry, created)."""
    memory_key_check(key)
    size = check_json_size(value, limit=settings.MEMORY_MAX_VALUE_BYTES, what="Memory value")
    now = timezone.now()
    with transaction.atomic(using=router.db_for_write(MemoryEntry)):
        entry = MemoryEntry.objects.filter(key=key).first()
        if entry is None:
            entry = MemoryEntry.objects.create(
                key=key, value=value, size_bytes=size, created_at=now, updated_at=now
            )
            return entry, True
        entry.value = value
        entry.size_bytes = size
        entry.version += 1
        entry.updated_at = now
        entry.save(update_fields=["value", "size_bytes", "version", "updated_at"])
        return entry, False


def memory_delete(*, key: str) -> None:
    memory_key_check(key)
    deleted, _ = MemoryEntry.objects.filter(key=key).delete()
    if not deleted:
        raise NotFound(f"No memory entry with key {key!r}.")
