"""Reads of the tool registry. The listing is served from the cache (the KV role) under a key
named by the registry's digest: registering or removing a tool changes the key, so a stale
listing is never served, and processes with different registries never share one."""

from typing import Any

from django.conf import settings
from django.core.cache import cache

from tools.registry import registry

CACHE_PREFIX = "tools:list:"


def tools_list() -> list[dict[str, Any]]:
    """Return every registered tool's name, description, schema, timeout and retries."""
    key = CACHE_PREFIX + registry.digest
    listing = cache.get(key)
    if listing is None:
        listing = [tool.describe() for tool in registry.all()]
        cache.set(key, listing, timeout=settings.TOOLS_CACHE_SECONDS)
    return listing  # type: ignore[no-any-return]
