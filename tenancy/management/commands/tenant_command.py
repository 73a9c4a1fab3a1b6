import argparse
from typing import Any

from django.core.management import call_command, get_commands, load_command_class
from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db import connections

from tenancy.context import tenant_context
from tenancy.router import bound_alias
from tenancy.scopes import Scope
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Run any management command against one tenant's database: "
        "`tenant_command SLUG -- COMMAND [ARGS...]`. The tenant is bound for the command (so "
        "tenant-scoped models reach its database) and commands with a --database option get the "
        "tenant's alias, e.g. `tenant_command acme -- dumpdata memory.memoryentry`."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("slug", help="The tenant's slug.")
        parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARGS...]")

    def handle(self, *args: Any, slug: str, command: list[str], **options: Any) -> None:
        if command[:1] == ["--"]:
            command = command[1:]
        if not command:
            raise CommandError("Name the command to run: tenant_command SLUG -- COMMAND [ARGS...]")
        name, rest = command[0], command[1:]
        tenant = Tenant.objects.select_related("database").filter(slug=slug).first()
        if tenant is None:
            raise CommandError(f"No tenant {slug!r}.")
        commands = get_commands()
        if name not in commands:
            raise CommandError(f"Unknown command {name!r}; see manage.py help.")
        target = load_command_class(commands[name], name)
        takes_database = any(
            action.dest == "database" for action in target.create_parser("manage.py", name)._actions
        )
        with tenant_context(tenant):
            alias = bound_alias(Scope.TENANT)
            if takes_database and not any(a.split("=")[0] == "--database" for a in rest):
                rest = [*rest, "--database", alias]
            # Visible to commands that look the alias up in settings (dbshell, dumpdata, ...).
            connections.settings[alias] = connections[alias].settings_dict
            try:
                call_command(target, *rest, stdout=self.stdout, stderr=self.stderr)
            finally:
                del connections.settings[alias]
