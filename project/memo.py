"""Short-lived per-process memos for the lookups every API request makes.

Resolving an API key and a run costs ~1.2-1.7 ms each through the ORM on a small machine,
more than the tool call they guard. Both are memoised per process for a few seconds
(`API_LOOKUP_CACHE_SECONDS`, 0 turns it off). What that may delay, and why it is safe:
- a key revoked, or a tenant suspended or deleted, on another process stops working as soon
  as that process sees the revocation generation move (`tenants.revocation`, within
  `REVOCATION_CHECK_SECONDS`), which drops every memo here (`memos_clear`); at once on this one;
- a completed run still looks active for the TTL elsewhere, but its database's triggers
  refuse every write (409), so nothing lands after `complete`.
"""

import threading
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from cachetools import TTLCache
from django.conf import settings

V = TypeVar("V")

_every: "weakref.WeakSet[Memo[Any]]" = weakref.WeakSet()


def memos_clear() -> None:
    """Drop every memoised value of this process (after a revocation anywhere)."""
    for memo in list(_every):
        memo.clear()


class Memo(Generic[V]):
    def __init__(self, maxsize: int = 10_000):
        self._maxsize = maxsize
        self._cache: TTLCache[Hashable, V] | None = None
        self._ttl = -1.0
        self._lock = threading.Lock()
        self._epoch = 0  # bumped by forget/clear, so a load that raced them is not kept
        _every.add(self)

    def _store(self) -> "TTLCache[Hashable, V] | None":
        ttl = float(settings.API_LOOKUP_CACHE_SECONDS)
        if ttl != self._ttl:  # settings are read when used, so tests can change them
            self._ttl = ttl
            self._cache = TTLCache(self._maxsize, ttl) if ttl > 0 else None
        return self._cache

    def get_or_load(self, key: Hashable, load: Callable[[], V | None]) -> V | None:
        """Return the memoised value for `key`, or load it (None is never memoised).

        A value loaded while `forget` or `clear` ran is returned but not kept: it may predate
        the change that caused them.
        """
        with self._lock:
            store = self._store()
            if store is not None:
                # One read: `key in store` then `store[key]` raised KeyError (a 500) when the
                # entry expired between the two, about once a TTL under load.
                try:
                    return store[key]
                except KeyError:
                    pass
            epoch = self._epoch
        value = load()
        if value is not None:
            with self._lock:
                store = self._store()
                if store is not None and epoch == self._epoch:
                    store[key] = value
        return value

    def forget(self, key: Hashable) -> None:
        with self._lock:
            self._epoch += 1
            if self._cache is not None:
                self._cache.pop(key, None)

    def clear(self) -> None:
        with self._lock:
            self._epoch += 1
            if self._cache is not None:
                self._cache.clear()
