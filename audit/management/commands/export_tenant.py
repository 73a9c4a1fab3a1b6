from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.export import tenant_export
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Write a tenant's database as one consistent .sqlite3 file (with --runs: a tarball "
        "holding it, every run's database and a manifest of SHA-256s)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug")
        parser.add_argument("--output", "-o", metavar="FILE", help="Default: SLUG.sqlite3/.tar")
        parser.add_argument("--runs", action="store_true", help="A tarball with the runs too.")

    def handle(self, *args: Any, slug: str, output: str | None, runs: bool, **opts: Any) -> None:
        tenant = Tenant.objects.select_related("database").filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"No tenant {slug!r}; list them in the admin or with dbstats.")
        destination = Path(output or f"{slug}.{'tar' if runs else 'sqlite3'}").resolve()
        if destination.exists():
            raise CommandError(f"{destination} exists; choose another --output.")
        tenant_export(tenant=tenant, destination=destination, with_runs=runs)
        self.stdout.write(str(destination))
