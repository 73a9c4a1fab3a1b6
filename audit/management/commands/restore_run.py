import shutil
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from runs.models import Run
from tenancy.restored import restored_copy


class Command(BaseCommand):
    help = (
        "Bring an archived run back as a local read-only database (checked against its "
        "SHA-256) in the restore cache, where the API reads it; print its path."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("run_id")
        parser.add_argument("--to", metavar="FILE", help="Also copy it to FILE.")

    def handle(self, *args: Any, run_id: str, to: str | None, **options: Any) -> None:
        run = Run.objects.filter(pk=run_id).first()
        if run is None:
            raise CommandError(f"No run {run_id!r}.")
        if run.archived_at is None:
            raise CommandError(f"Run {run_id} is not archived ({run.status}); nothing to restore.")
        path = restored_copy(key=run.archive_key, sha256=run.archive_sha256)
        if to:
            shutil.copyfile(path, Path(to))
            path = Path(to)
        self.stdout.write(str(path))
