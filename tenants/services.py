"""Writes of the control plane: tenants and API keys."""

import hashlib
import logging
import re
import secrets
import shutil
from collections.abc import Callable, Iterable
from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from django.core.exceptions import ValidationError
from django.core.files.storage import FileSystemStorage, Storage, storages
from django.core.validators import ProhibitNullCharactersValidator
from django.db import DatabaseError, IntegrityError, models, transaction
from django.db.models.functions import Coalesce
from django.utils import timezone

from project.exceptions import ApplicationError, Conflict, InvalidInput
from project.memo import Memo
from tenancy import connections
from tenancy.context import tenant_context
from tenancy.ids import new_id
from tenancy.paths import absolute, restored_dir, run_alias, tenant_alias, tenant_db_relpath
from tenancy.provisioning import database_provisioned
from tenancy.rows import by_pk, fetch_one, insert_row
from tenancy.scopes import Scope
from tenancy.templates import remove_database_files
from tenants import usage
from tenants.models import SLUG_PATTERN, ApiKey, Database, Tenant
from tenants.revocation import revocation_bump, revocation_check

logger = logging.getLogger(__name__)

SLUG_RE = re.compile(SLUG_PATTERN)


_no_nul = ProhibitNullCharactersValidator()


def check_fields(model: type[models.Model], **values: Any) -> None:
    """Check values against the model fields' own rules (length, pattern, NUL), as admin forms do.

    Raise `InvalidInput` naming the field: a value the column cannot hold must never reach the
    database (PostgreSQL answers a `DataError`, SQLite stores what no form can save again).
    """
    for name, value in values.items():
        field = model._meta.get_field(name)
        try:
            _no_nul(value)
            field.clean(value, None)  # type: ignore[union-attr]
        except ValidationError as exc:
            shown = str(value)[:60] + ("…" if len(str(value)) > 60 else "")
            raise InvalidInput(
                f"{model._meta.verbose_name} {name} {shown!r} is invalid: " + " ".join(exc.messages)
            ) from exc


def tenant_create(*, slug: str, name: str = "") -> Tenant:
    """Provision a tenant: copy the tenant template to a new file, then register both.

    The file is written first and registered second, in one control-plane transaction; if
    registration fails the file is removed, so a failure never leaves a half-made tenant.
    """
    if not SLUG_RE.match(slug):
        raise InvalidInput(
            f"Slug {slug!r} is invalid: use 1-63 lowercase letters, digits and inner hyphens."
        )
    check_fields(Tenant, name=name)
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
    check_fields(ApiKey, name=name)
    prefix = new_id("ak").removeprefix("ak_")[:12]
    raw = f"adb_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey.objects.create(tenant=tenant, name=name, prefix=prefix, key_hash=_digest(raw))
    _tenant_audit(tenant, "api_key_created", {"key": key.pk, "prefix": prefix, "name": name})
    return key, raw


def api_key_revoke(*, key: ApiKey) -> ApiKey:
    """Revoke `key`: refused at once here and on every other process within a second."""
    with transaction.atomic(using="default"):
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
        revocation_bump()
    _tenant_audit(key.tenant, "api_key_revoked", {"key": key.pk, "prefix": key.prefix})
    return key


def _tenant_audit(tenant: Tenant, kind: str, facts: dict[str, Any]) -> None:
    """Append to the tenant database's audit trail after the control-plane change committed.

    Two databases, no shared transaction: the entry follows the change; if the tenant's
    database cannot take it (damaged, missing), the change stands and the miss is logged.
    """
    from audit.chain import tenant_append

    try:
        with tenant_context(tenant):
            tenant_append(kind, facts)
    except (ApplicationError, DatabaseError):
        logger.exception("tenant %s: audit entry %s could not be written", tenant.slug, kind)


def tenant_save(*, tenant: Tenant, fields: Iterable[str] | None = None) -> Tenant:
    """Save edits of a tenant (status, limits); every process sees them within a second.

    Suspending a tenant refuses its keys at once here and within a second everywhere else.
    """
    with transaction.atomic(using="default"):
        tenant.save(update_fields=None if fields is None else list(fields))
        revocation_bump()
    return tenant


@dataclass(frozen=True)
class TenantDeleted:
    tenant_id: str
    slug: str
    databases: int  # registry rows removed (the tenant's own and one per run)


def tenant_delete(
    *,
    tenant: Tenant,
    progress: Callable[[list[Database]], Iterable[Database]] = iter,
    keep: Callable[[Tenant], Any] | None = None,
) -> TenantDeleted:
    """Delete a tenant for good: refuse it everywhere, remove its files, then its registry rows.

    1. Its keys are revoked and the tenant marked deleted (every process refuses it within a
       second); 2. every registered database file of the tenant (tenant and runs, with -wal and
       -shm) and its directory are removed; 3. the tenant, its keys, runs and database registry
       rows are deleted in one transaction. Files go before rows, so a failure half-way leaves
       rows that a second call (it is idempotent) finishes; never a file nobody knows about.
    `progress` wraps the list of databases being removed (e.g. a progress bar). `keep`, if
    given, runs once the tenant is refused and before anything is removed (`delete_tenant
    --archive` writes the tenant's export there). Objects under the tenant's prefix in
    STORAGES["archives"] and ["artifacts"] are removed with its files.
    """
    now = timezone.now()
    with transaction.atomic(using="default"):
        Tenant.objects.filter(pk=tenant.pk).update(
            status=Tenant.Status.SUSPENDED, deleted_at=Coalesce("deleted_at", now)
        )
        ApiKey.objects.filter(tenant_id=tenant.pk, revoked_at__isnull=True).update(revoked_at=now)
        revocation_bump()
    if keep is not None:
        keep(tenant)
    directory = absolute(tenant_db_relpath(tenant.pk)).parent
    databases = list(Database.objects.filter(path__startswith=_tenant_prefix(tenant.pk)))
    for database in progress(databases):
        path = absolute(database.path)
        alias = tenant_alias(tenant.pk) if database.kind == Scope.TENANT else run_alias(path.stem)
        connections.release(alias)
        remove_database_files(path)
    if directory.exists():  # also takes files no registry row names (a crashed provisioning)
        shutil.rmtree(directory)
    for kind in ("archives", "artifacts"):
        _delete_tree(storages[kind], tenant.pk)
    # Read-only copies of its archived runs restored for reading (tenancy.restored).
    for sha256 in tenant.runs.exclude(archive_sha256="").values_list("archive_sha256", flat=True):
        (restored_dir() / f"{sha256}.sqlite3").unlink(missing_ok=True)
    with transaction.atomic(using="default"):
        Tenant.objects.filter(pk=tenant.pk).delete()  # cascades to its keys and runs
        removed, _ = Database.objects.filter(path__startswith=_tenant_prefix(tenant.pk)).delete()
    logger.info("tenant %s (%s) deleted: %d database(s)", tenant.slug, tenant.pk, removed)
    return TenantDeleted(tenant_id=tenant.pk, slug=tenant.slug, databases=removed)


def _delete_tree(storage: Storage, prefix: str) -> None:
    """Delete every object under `prefix/` of a storage (folders too, on a filesystem)."""
    try:
        folders, names = storage.listdir(prefix)
    except FileNotFoundError:
        return
    for name in names:
        storage.delete(f"{prefix}/{name}")
    for folder in folders:
        _delete_tree(storage, f"{prefix}/{folder}")
    if isinstance(storage, FileSystemStorage):
        with suppress(FileNotFoundError):
            Path(storage.path(prefix)).rmdir()


def _tenant_prefix(tenant_id: str) -> str:
    # Every database of a tenant lives under its directory (`tenancy.paths`).
    return str(Path(tenant_db_relpath(tenant_id)).parent) + "/"


_key_memo: Memo[Tenant] = Memo()


def tenant_for_api_key(raw: str) -> Tenant | None:
    """Return the active tenant a raw API key names, or None for any unknown or revoked key.

    The returned tenant may be shared with other threads: treat it as read-only.
    """
    parts = raw.split("_", 2)
    if len(parts) != 3 or parts[0] != "adb" or not parts[1].isalnum():
        return None
    revocation_check()
    digest = _digest(raw)
    return _key_memo.get_or_load(digest, lambda: _tenant_for_key(parts[1], digest))


# A key, its tenant and the tenant's database: plain queries (`tenancy.rows.fetch_one`), about
# half the cost of the ORM's compiled two-level join, paid by every request whose key is not
# memoised (many tenants, each calling now and then).
_KEY_SQL = f'SELECT * FROM "{ApiKey._meta.db_table}" WHERE "prefix" = %s AND "revoked_at" IS NULL'


def _tenant_for_key(prefix: str, digest: str) -> Tenant | None:
    key = fetch_one(ApiKey, _KEY_SQL, [prefix])
    if key is None or not secrets.compare_digest(key.key_hash, digest):
        return None
    tenant = by_pk(Tenant, key.tenant_id)
    if tenant is None or tenant.status != Tenant.Status.ACTIVE or tenant.deleted_at is not None:
        return None
    database = by_pk(Database, tenant.database_id)
    if database is None:
        return None  # as the join would: a tenant is served only with its database
    tenant.database, key.tenant = database, tenant
    now = timezone.now()
    # At most once a minute per key, and written in batches off the request path.
    if key.last_used_at is None or now - key.last_used_at > timedelta(minutes=1):
        usage.note_used(key.pk, now)
    return key.tenant


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()
