from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from project.exceptions import ApplicationError
from tenants.models import Tenant
from tenants.services import api_key_create


class Command(BaseCommand):
    help = (
        "Create an API key for a tenant. The raw key is the last line of the output and is shown "
        "only this once (only its hash is stored)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The tenant's slug.")
        parser.add_argument("--name", default="", help="A label for the key, e.g. 'ci' or 'prod'.")

    def handle(self, *args: Any, slug: str, name: str, **options: Any) -> None:
        tenant = Tenant.objects.filter(slug=slug).first()
        if tenant is None:
            raise CommandError(
                f"No tenant {slug!r}. Create it with: manage.py create_tenant {slug}"
            )
        try:
            key, raw = api_key_create(tenant=tenant, name=name)
        except ApplicationError as exc:
            raise CommandError(exc.message) from exc
        self.stderr.write(f"API key {key.prefix} for tenant {slug}; store it now, it is not kept:")
        self.stdout.write(raw)
