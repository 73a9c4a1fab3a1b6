"""Writes of the control plane: tenants and API keys."""

import hashlib
import logging
import re
import secrets
from datetime import timedelta

from django.db import IntegrityError
from django.utils import timezone

from project.exceptions import Conflict, InvalidInput
from project.memo import Memo
from tenancy.ids import new_id
from tenancy.paths import tenant_db_relpath
from tenancy.provisioning import database_provisioned
from tenancy.rows import insert_row
from tenancy.scopes import Scope
from tenants.models import SLUG_PATTERN, ApiKey, Tenant

logger = logging.getLogger(__name__)

SLUG_RE = re.compile(SLUG_PATTERN)


def tenant_create(*, slug: str, name: str = "") -> Tenant:
    """Provision a tenant: copy the tenant template to a new file, then register both.

    The file is written first and registered second, in one control-plane transaction; if
    registration fails the file is removed, so a failure never leaves a half-made tenant.
    """
    if not SLUG_RE.match(slug):
        raise InvalidInput(
            f"Slug {slug!r} is invalid: use 1-63 lowercase letters, digits and inner hyphens."
        )
    tenant_id = new_id("ten")
    try:
        with database_provisioned(Scope.TENANT, tenant_db_relpath(tenant_id)) as database:
            tenant = insert_row(Tenant, id=tenant_id, slug=slug, name=name, database=database)
            tenant.database = database
    except IntegrityError as exc:
        if Tenant.objects.filter(slug=slug).exists():
            raise Conflict(
                f"A tenant with slug {slug!r} already exists.", code="slug_taken"
            ) from exc
        raise
    logger.info("tenant %s (%s) provisioned at schema %s", slug, tenant_id, database.schema_version)
    return tenant


def api_key_create(*, tenant: Tenant, name: str = "") -> tuple[ApiKey, str]:
    """Create an API key for `tenant`; return it with the raw key, which is never stored."""
    prefix = new_id("ak").removeprefix("ak_")[:12]
    raw = f"adb_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(tenant=tenant, name=name, prefix=prefix, key_hash=_digest(raw))
    return key, raw


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    if key.revoked_at is None:
        key.revoked_at = timezone.now()
        key.save(update_fields=["revoked_at"])
    _key_memo.forget(key.key_hash)
    return key


_key_memo: Memo[Tenant] = Memo()


def tenant_for_api_key(raw: str) -> Tenant | None:
    """Return the active tenant a raw API key names, or None for any unknown or revoked key.

    The returned tenant may be shared with other threads: treat it as read-only.
    """
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != "adb" or not parts[1].isalnum():
        return None
    digest = _digest(raw)
    return _key_memo.get_or_load(digest, lambda: _tenant_for_key(parts[1], digest))


def _tenant_for_key(prefix: str, digest: str) -> Tenant | None:
    key = (
        ApiKey.objects.select_related("tenant__database")
        .filter(prefix=prefix, revoked_at__isnull=True)
        .first()
    )
    if key is None or not secrets.compare_digest(key.key_hash, digest):
        return None
    if key.tenant.status != Tenant.Status.ACTIVE or key.tenant.deleted_at is not None:
        return None
    now = timezone.now()
    # Coalesced: at most one control-plane write per key per minute, not one per request.
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        ApiKey.objects.filter(pk=key.pk).update(last_used_at=now)
    return key.tenant


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()
