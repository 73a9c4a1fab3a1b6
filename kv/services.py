"""The tenant KV: short-lived JSON values in the cache, for data agents read constantly.

Eventually consistent and not durable: a value may vanish before its TTL (eviction, a Redis
restart), and with local memory (no REDIS_URL) each process has its own copy. Durable state
belongs in tenant memory (`/api/v1/memory`).
"""

import re
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.utils import timezone

from kv import cache
from project.exceptions import InvalidInput, NotFound
from project.limits import check_json_size
from tenants.models import Tenant

KV_KEY_RE = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.:/@+-]{0,199}$")
KV_KEY_RULE = (
    "1-200 characters from A-Z a-z 0-9 and _ . : / @ + -, not starting with a punctuation mark "
    "other than _"
)
NAMESPACE = "kv"


def kv_key_check(key: str) -> str:
    if not KV_KEY_RE.match(key):
        raise InvalidInput(f"KV key {key[:220]!r} is invalid: {KV_KEY_RULE}.")
    return key


def kv_put(*, tenant: Tenant, key: str, value: Any, ttl_s: int | None = None) -> dict[str, Any]:
    """Cache `value` under the tenant's `key` for `ttl_s` seconds (default KV_DEFAULT_TTL_S)."""
    kv_key_check(key)
    ttl = settings.KV_DEFAULT_TTL_S if ttl_s is None else ttl_s
    if not 1 <= ttl <= settings.KV_MAX_TTL_S:
        raise InvalidInput(
            f"ttl_s={ttl} is out of range: 1 to KV_MAX_TTL_S ({settings.KV_MAX_TTL_S})."
        )
    size = check_json_size(value, limit=settings.KV_MAX_VALUE_BYTES, what="KV value")
    now = timezone.now()
    entry = {
        "key": key,
        "value": value,
        "size_bytes": size,
        "updated_at": now.isoformat(),
        "expires_at": (now + timedelta(seconds=ttl)).isoformat(),
    }
    cache.tenant_set(tenant, NAMESPACE, key, entry, ttl_s=ttl)
    return _out(entry)


def kv_get(*, tenant: Tenant, key: str) -> dict[str, Any]:
    """Return the tenant's cached entry for `key`, or raise `NotFound` (expired or never set)."""
    kv_key_check(key)
    entry = cache.tenant_get(tenant, NAMESPACE, key)
    if entry is None:
        raise NotFound(f"No KV entry {key!r} (never set, expired or evicted).")
    return _out(entry)


def kv_delete(*, tenant: Tenant, key: str) -> None:
    kv_key_check(key)
    if not cache.tenant_delete(tenant, NAMESPACE, key):
        raise NotFound(f"No KV entry {key!r} (never set, expired or evicted).")


def _out(entry: dict[str, Any]) -> dict[str, Any]:
    return {
        **entry,
        "updated_at": datetime.fromisoformat(entry["updated_at"]),
        "expires_at": datetime.fromisoformat(entry["expires_at"]),
    }
