"""project.memo: a memoised value that expires while it is being read is loaded again, never an
error (it was a KeyError, answered 500, about once a TTL per memoised key under load)."""

import pytest
from cachetools import TTLCache

from project import memo
from project.memo import Memo


class ExpiresAfterEveryCheck(TTLCache):
    """A TTLCache whose clock jumps past every entry's expiry right after a membership check:
    the moment between `key in cache` and `cache[key]` where a GIL switch can let time pass."""

    def __init__(self, maxsize: int, ttl: float):
        self.now = 0.0
        super().__init__(maxsize, ttl, timer=lambda: self.now)

    def __contains__(self, key: object) -> bool:
        found = super().__contains__(key)
        self.now += 2 * self.ttl
        return found


@pytest.fixture
def racy(monkeypatch, settings):
    settings.API_LOOKUP_CACHE_SECONDS = 5
    monkeypatch.setattr(memo, "TTLCache", ExpiresAfterEveryCheck)


def test_a_value_expiring_while_read_is_loaded_again(racy):
    loads = []
    lookups: Memo[str] = Memo()

    def load() -> str:
        loads.append(1)
        return f"value {len(loads)}"

    assert lookups.get_or_load("key", load) == "value 1"
    # The old two-step read raised KeyError here: the entry expired after its membership check.
    assert lookups.get_or_load("key", load).startswith("value ")
    store = lookups._cache
    assert isinstance(store, ExpiresAfterEveryCheck)
    store.now += 2 * store.ttl  # expired for good: read, miss, load again
    assert lookups.get_or_load("key", load) == f"value {len(loads)}"
    assert len(loads) >= 2


def test_a_fresh_value_is_served_from_the_memo(settings):
    settings.API_LOOKUP_CACHE_SECONDS = 60
    loads = []
    lookups: Memo[str] = Memo()
    for _ in range(3):
        assert lookups.get_or_load("key", lambda: loads.append(1) or "value") == "value"
    assert len(loads) == 1
    lookups.forget("key")
    assert lookups.get_or_load("key", lambda: loads.append(1) or "value") == "value"
    assert len(loads) == 2
