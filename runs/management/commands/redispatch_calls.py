import json
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from runs.queue import REDISPATCH_CONFIRM_S, redispatch_lost
from tenants.models import Tenant


class Command(BaseCommand):
    help = (
        "Send again the queued async tool calls of this node's active runs whose broker message "
        "was lost: the process died between recording a call and publishing it, a worker was "
        "killed while taking it, or Redis restarted without its data. A call is lost when the "
        "broker has its task neither in a queue nor held unacknowledged by a worker, at two "
        f"readings {REDISPATCH_CONFIRM_S:g} s apart. Celery beat runs the same every "
        "TOOL_REDISPATCH_EVERY_S. Needs REDIS_URL. Idempotent."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--min-age",
            type=float,
            default=None,
            metavar="S",
            help="Only calls recorded at least S seconds ago (default TOOL_REDISPATCH_GRACE_S, "
            f"{settings.TOOL_REDISPATCH_GRACE_S:g}: a younger call may still be on its way to "
            "the broker).",
        )
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant's runs.")
        parser.add_argument(
            "--dry-run", action="store_true", help="List the lost calls; send nothing."
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="Print one JSON object."
        )

    def handle(
        self,
        *args: Any,
        min_age: float | None,
        tenant: str | None,
        dry_run: bool,
        as_json: bool,
        **options: Any,
    ) -> None:
        if not settings.REDIS_URL:
            raise CommandError(
                "REDIS_URL is not set: in embedded mode async calls run in the web process's own "
                "pool, and there is no broker whose messages could be lost."
            )
        if min_age is not None and min_age < 0:
            raise CommandError("--min-age must be 0 or more seconds.")
        if tenant is not None and not Tenant.objects.filter(slug=tenant).exists():
            raise CommandError(f"No tenant {tenant!r}.")
        done = redispatch_lost(
            min_age_s=min_age,
            tenant_slug=tenant,
            dry_run=dry_run,
            progress=lambda runs: tqdm(
                runs, unit="run", desc="redispatch_calls", disable=None, file=self.stderr
            ),
        )
        verb = "would send" if dry_run else "sent"
        if as_json:
            self.stdout.write(
                json.dumps(
                    {
                        "checked_runs": done.checked,
                        "dry_run": dry_run,
                        "calls": [{"run": run, "seq": seq} for run, seq in done.dispatched],
                        "errors": done.errors,
                    }
                )
            )
        else:
            self.stdout.write(
                f"Checked {done.checked} active run(s) on node {settings.HOME_NODE}; {verb} "
                f"{len(done.dispatched)} lost call(s) again."
            )
            for run, seq in done.dispatched:
                self.stdout.write(f"{verb} {run} {seq}")
        if done.errors:
            reasons = sorted(set(done.errors.values()))
            raise CommandError(
                f"{len(done.errors)} run(s) were not checked ({', '.join(done.errors)}): "
                f"{'; '.join(reasons[:3])}. `dbcheck` tells damaged or missing databases; they "
                "are checked again on the next run."
            )
