"""The revocation generation in one process: another process's revocation drops our memos.

"Another process" is played by moving the generation where it lives (Redis, or the control
plane when embedded) without touching this process's memos.
"""

import time

import pytest
import redis

from tenants import revocation
from tenants.models import ApiKey
from tenants.services import api_key_create, tenant_for_api_key
from tests.processes import free_port

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def fresh_process_state(monkeypatch):
    """Start each test as a process that never looked at the generation."""
    monkeypatch.setattr(revocation, "_next_check", 0.0)
    monkeypatch.setattr(revocation, "_seen", None)


@pytest.fixture(params=["embedded", "redis"])
def mode(request, settings):
    settings.API_LOOKUP_CACHE_SECONDS = 60
    settings.REVOCATION_CHECK_SECONDS = 0.2
    if request.param == "redis":
        settings.REDIS_URL = request.getfixturevalue("redis_url")
    else:
        settings.REDIS_URL = ""
    return request.param


def revoked_elsewhere(key: ApiKey, mode: str) -> None:
    """Revoke `key` as another process would: the row, then the generation; no local memo."""
    ApiKey.objects.filter(pk=key.pk).update(revoked_at="2030-01-01T00:00:00Z")
    if mode == "redis":
        revocation._redis(revocation.settings.REDIS_URL).incr(revocation.REDIS_KEY)
    else:
        revocation._bump_row()


def until(predicate, deadline_s: float = 2.0) -> float:
    """Poll `predicate` until it holds; return how long that took."""
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < deadline_s, "not within the deadline"
        time.sleep(0.01)
    return time.monotonic() - started


def test_another_process_revocation_drops_the_memo_within_the_interval(tenant, mode):
    key, raw = api_key_create(tenant=tenant)
    assert tenant_for_api_key(raw) == tenant
    revocation.revocation_check()  # this process has seen the current generation
    ApiKey.objects.filter(pk=key.pk).update(name="memoised")  # no bump: stays memoised
    assert tenant_for_api_key(raw) == tenant

    revoked_elsewhere(key, mode)
    took = until(lambda: tenant_for_api_key(raw) is None)
    assert took < 1.0


def test_memo_survives_while_the_generation_stands_still(tenant, mode):
    key, raw = api_key_create(tenant=tenant)
    assert tenant_for_api_key(raw) == tenant
    revocation.revocation_check()
    ApiKey.objects.filter(pk=key.pk).update(revoked_at="2030-01-01T00:00:00Z")  # no bump
    deadline = time.monotonic() + 0.5  # more than two check intervals
    while time.monotonic() < deadline:
        assert tenant_for_api_key(raw) == tenant  # still memoised: nothing told us


def test_unreadable_redis_drops_memos_rather_than_trust_them(tenant, settings):
    settings.API_LOOKUP_CACHE_SECONDS = 60
    settings.REVOCATION_CHECK_SECONDS = 0.2
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    key, raw = api_key_create(tenant=tenant)
    assert tenant_for_api_key(raw) == tenant
    ApiKey.objects.filter(pk=key.pk).update(revoked_at="2030-01-01T00:00:00Z")
    with pytest.raises(redis.RedisError):
        revocation.generation_read()
    until(lambda: tenant_for_api_key(raw) is None)
