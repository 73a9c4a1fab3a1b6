from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.exceptions import ApplicationError
from tenants.services import tenant_create


class Command(BaseCommand):
    help = "Create a tenant and its database (a copy of the pre-migrated tenant template)."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="Unique slug: lowercase letters, digits, inner hyphens.")
        parser.add_argument("--name", default="", help="Display name.")

    def handle(self, *args: Any, slug: str, name: str, **options: Any) -> None:
        try:
            tenant = tenant_create(slug=slug, name=name)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stdout.write(
            f"Created tenant {tenant.slug} ({tenant.id}); database {tenant.database.path} at "
            f"schema {tenant.database.schema_version}.\n"
            f"Next: manage.py create_api_key {tenant.slug}"
        )
