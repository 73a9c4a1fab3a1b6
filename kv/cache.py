"""Tenant-scoped keys of Django's cache (Redis with REDIS_URL, local memory otherwise).

Every key is built here from a server-generated tenant id and a fixed namespace, never from a
client string alone: `t:<tenant id>:<namespace>:<key>`. Tenant ids have no `:`, so no client key
of one tenant can spell another tenant's key.
"""

from typing import Any

from django.core.cache import cache

from tenants.models import Tenant


def tenant_key(tenant: Tenant, namespace: str, key: str) -> str:
    """Return the cache key of `key` in `namespace` of `tenant` (the only way to build one)."""
    if ":" in tenant.id or ":" in namespace:
        raise ValueError("tenant ids and namespaces never contain ':'")
    return f"t:{tenant.id}:{namespace}:{key}"


def tenant_get(tenant: Tenant, namespace: str, key: str) -> Any:
    return cache.get(tenant_key(tenant, namespace, key))


def tenant_set(tenant: Tenant, namespace: str, key: str, value: Any, *, ttl_s: int) -> None:
    cache.set(tenant_key(tenant, namespace, key), value, timeout=ttl_s)


def tenant_delete(tenant: Tenant, namespace: str, key: str) -> bool:
    return bool(cache.delete(tenant_key(tenant, namespace, key)))
