"""New tenant and run databases: a template copy first, its registration second (decision 0007)."""

from collections.abc import Iterator
from contextlib import contextmanager, suppress

from django.conf import settings
from django.db import transaction

from tenancy.paths import absolute
from tenancy.rows import insert_row
from tenancy.scopes import Scope
from tenancy.templates import copy_template, ensure_template, remove_database_files
from tenants.models import Database


@contextmanager
def database_provisioned(kind: Scope, relpath: str) -> Iterator[Database]:
    """Copy the `kind` template to `relpath` and register it; yield the registry row.

    The block runs inside the control-plane transaction that registers the file: register the
    owner (tenant, run) there. If the block or the commit fails, the file is removed (with its
    directory when that is left empty), so no registered database lacks its file and no file
    outlives a failed registration.
    """
    template, version = ensure_template(kind)
    path = absolute(relpath)
    copy_template(template, path)
    try:
        with transaction.atomic(using="default"):
            yield insert_row(
                Database,
                kind=kind.value,
                path=relpath,
                schema_version=version,
                home_node=settings.HOME_NODE,
            )
    except BaseException:
        remove_database_files(path)
        with suppress(OSError):
            path.parent.rmdir()
        raise
