"""Short-lived per-process memos for the lookups every API request makes.

Resolving an API key and a run costs ~1.2-1.7 ms each through the ORM on a small machine,
more than the tool call they guard. Both are memoised per process for a few seconds
(`API_LOOKUP_CACHE_SECONDS`, 0 turns it off). What that may delay, and why it is safe:
- a key revoked on another process stops working within the TTL (at once on this one);
- a completed run still looks active for the TTL elsewhere, but its database's triggers
  refuse every write (409), so nothing lands after `complete`.
"""

import threading
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

from cachetools import TTLCache
from django.conf import settings

V = TypeVar("V")


class Memo(Generic[V]):
    def __init__(self, maxsize: int = 10_000):
        self._maxsize = maxsize
        self._cache: TTLCache[Hashable, V] | None = None
        self._ttl = -1.0
        self._lock = threading.Lock()

    def _store(self) -> "TTLCache[Hashable, V] | None":
        ttl = float(settings.API_LOOKUP_CACHE_SECONDS)
        if ttl != self._ttl:  # settings are read when used, so tests can change them
            self._ttl = ttl
            self._cache = TTLCache(self._maxsize, ttl) if ttl > 0 else None
        return self._cache

    def get_or_load(self, key: Hashable, load: Callable[[], V | None]) -> V | None:
        """Return the memoised value for `key`, or load it (None is never memoised)."""
        with self._lock:
            store = self._store()
            if store is not None and key in store:
                return store[key]
        value = load()
        if value is not None:
            with self._lock:
                store = self._store()
                if store is not None:
                    store[key] = value
        return value

    def forget(self, key: Hashable) -> None:
        with self._lock:
            if self._cache is not None:
                self._cache.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            if self._cache is not None:
                self._cache.clear()
