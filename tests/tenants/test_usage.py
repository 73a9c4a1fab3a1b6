"""API keys' last use: noted on the request path, written in batches by a thread (tenants.usage)."""

import time

import pytest

from project.memo import memos_clear
from tenants import usage
from tenants.models import ApiKey
from tenants.services import api_key_create, tenant_for_api_key

pytestmark = pytest.mark.django_db(transaction=True)


def _stored(key_id: int):
    return ApiKey.objects.values_list("last_used_at", flat=True).get(pk=key_id)


def test_use_is_written_by_the_flush_not_by_the_request(tenant, settings):
    settings.API_KEY_USAGE_FLUSH_S = 3600  # the thread stays asleep: only flush() writes
    usage.flush()
    key, raw = api_key_create(tenant=tenant, name="agent")
    assert tenant_for_api_key(raw) == tenant
    assert _stored(key.pk) is None  # nothing written while answering the request
    assert usage.flush() == 1
    first = _stored(key.pk)
    assert first is not None

    memos_clear()  # the next request reads the control plane again
    assert tenant_for_api_key(raw) == tenant
    assert usage.flush() == 0  # used less than a minute ago: not noted again
    assert _stored(key.pk) == first


def test_the_thread_writes_within_the_interval(tenant, settings):
    settings.API_KEY_USAGE_FLUSH_S = 0.05
    key, raw = api_key_create(tenant=tenant, name="agent")
    assert tenant_for_api_key(raw) == tenant
    deadline = time.monotonic() + 10
    while _stored(key.pk) is None and time.monotonic() < deadline:
        time.sleep(0.02)  # polling the control plane for the thread's write
    assert _stored(key.pk) is not None


def test_with_no_interval_the_request_writes_it(tenant, settings):
    settings.API_KEY_USAGE_FLUSH_S = 0
    key, raw = api_key_create(tenant=tenant, name="agent")
    assert tenant_for_api_key(raw) == tenant
    assert _stored(key.pk) is not None


def test_a_failed_write_is_kept_for_the_next_flush(tenant, settings, monkeypatch):
    settings.API_KEY_USAGE_FLUSH_S = 3600
    usage.flush()
    key, raw = api_key_create(tenant=tenant, name="agent")
    assert tenant_for_api_key(raw) == tenant
    monkeypatch.setattr(ApiKey._meta, "db_table", "no_such_table")  # the UPDATE fails
    assert usage.flush() == 0
    monkeypatch.undo()
    assert usage.flush() == 1
    assert _stored(key.pk) is not None
