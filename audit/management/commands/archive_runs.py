from datetime import timedelta
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.utils import timezone
from tqdm import tqdm

from audit.archive import runs_archive
from runs.models import Run


class Command(BaseCommand):
    help = (
        "Archive finished runs that are not archived yet (a backlog, or attempts that crashed "
        "half-way): snapshot, upload to STORAGES['archives'], record, release the local file. "
        "Idempotent: rerun it after any failure."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--older-than",
            type=float,
            default=0,
            metavar="SECONDS",
            help="Only runs finished at least this long ago (default: all).",
        )
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant's runs.")

    def handle(self, *args: Any, older_than: float, tenant: str | None, **options: Any) -> None:
        cutoff = timezone.now() - timedelta(seconds=older_than) if older_than else None

        def bar(runs: list[Run]) -> Any:
            return tqdm(runs, unit="run", desc="archive", disable=None, file=self.stderr)

        done, failed = runs_archive(older_than=cutoff, tenant_slug=tenant, progress=bar)
        total = sum(item.size for item in done)
        self.stdout.write(f"Archived {len(done)} run(s), {total} bytes.")
        if failed:
            for run_id, error in failed.items():
                self.stderr.write(f"{run_id}: {error}")
            raise CommandError(
                f"{len(failed)} run(s) could not be archived (above); fix the cause (storage "
                "reachable, disk space) and rerun manage.py archive_runs."
            )
