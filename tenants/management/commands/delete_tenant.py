from collections.abc import Callable
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from audit.export import tenant_export
from tenants.models import Database, Tenant
from tenants.services import tenant_delete


class Command(BaseCommand):
    help = (
        "Delete a tenant for good: revoke its keys (refused by every process within a second), "
        "remove its tenant database and every run database (with -wal/-shm) from disk, then its "
        "registry rows. Irreversible: pass --yes. A deletion that failed half-way is finished "
        "by running the command again."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The tenant's slug.")
        parser.add_argument(
            "--yes", action="store_true", help="Confirm: delete the tenant and all its data."
        )
        parser.add_argument(
            "--archive",
            metavar="FILE",
            help="First write the tenant's export with every run (a tarball, as export_tenant "
            "--runs) to FILE, outside DATA_DIR: the only copy left afterwards.",
        )

    def handle(
        self, *args: Any, slug: str, yes: bool, archive: str | None = None, **options: Any
    ) -> None:
        tenant = Tenant.objects.select_related("database").filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"No tenant {slug!r}; list them in the admin or with dbstats.")
        if not yes:
            raise CommandError(
                f"This deletes tenant {slug} ({tenant.pk}) with all its runs and files, "
                f"irreversibly. Rerun with --yes: manage.py delete_tenant {slug} --yes"
            )

        def bar(databases: list[Database]) -> Any:
            return tqdm(databases, unit="db", desc=f"delete {slug}", disable=None, file=self.stderr)

        keep: Callable[[Tenant], None] | None = None
        if archive:
            destination = Path(archive).resolve()
            if destination.is_relative_to(Path(settings.DATA_DIR).resolve()):
                raise CommandError(f"--archive {archive}: choose a path outside DATA_DIR.")
            if destination.exists():
                raise CommandError(f"--archive {archive} exists; choose another file.")

            def export(tenant: Tenant) -> None:
                tenant_export(tenant=tenant, destination=destination, with_runs=True)

            keep = export

        try:
            deleted = tenant_delete(tenant=tenant, progress=bar, keep=keep)
        except OSError as exc:
            raise CommandError(
                f"Could not remove a file of tenant {slug}: {exc}. Its keys are revoked already; "
                "fix the cause (permissions, mount) and rerun: "
                f"manage.py delete_tenant {slug} --yes"
            ) from exc
        self.stdout.write(
            f"Deleted tenant {deleted.slug} ({deleted.tenant_id}): {deleted.databases} "
            "database(s), their files, archives and artifacts."
            + (f" Its export is in {archive}." if archive else "")
        )
