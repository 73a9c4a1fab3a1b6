from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from runs.services import runs_expire_idle


class Command(BaseCommand):
    help = (
        "Expire the active runs on this node (HOME_NODE) that had no write for their tenant's "
        "idle timeout (RUN_IDLE_TIMEOUT, or the tenant's override): their database is closed to "
        "writes and they stop counting toward the tenant's active-run limit. Run it from cron "
        "in embedded mode (with Redis, Celery beat runs it). Idempotent."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        result = runs_expire_idle(
            progress=lambda runs: iter(
                tqdm(runs, unit="run", desc="expire_runs", disable=None, file=self.stderr)
            )
        )
        self.stdout.write(
            f"Expired {len(result.expired)} of {result.checked} idle-aged active run(s) on node "
            f"{settings.HOME_NODE}."
        )
        for run_id in result.expired:
            self.stdout.write(f"expired {run_id}")
        if result.errors:
            raise CommandError(
                f"{len(result.errors)} run(s) could not be expired ({', '.join(result.errors)}): "
                "see the log for why (a damaged or missing database); `dbstats` lists them. "
                "They are retried on the next run."
            )
