import json
import os
from collections import defaultdict
from contextlib import suppress
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from django.db.models import Count
from tqdm import tqdm

from runs.models import Run
from runs.selectors import tool_calls_open_counts
from tenancy.paths import absolute
from tenants.models import Database, Tenant


class Command(BaseCommand):
    help = (
        "Per tenant: number of databases (the tenant's own and one per run), their size on disk "
        "(with -wal files), runs by status, and databases the registry records as damaged, "
        "missing or quarantined. Reads the control plane and stats files; opens no database, "
        "unless --queues: queued and running async tool calls, read from each active run's "
        "database on this node."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--tenant", metavar="SLUG", help="Only this tenant.")
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="One JSON object per line."
        )
        parser.add_argument(
            "--queues",
            action="store_true",
            help="Also count queued and running async tool calls (opens active run databases).",
        )

    def handle(
        self, *args: Any, tenant: str | None, as_json: bool, queues: bool, **options: Any
    ) -> None:
        tenants = Tenant.objects.select_related("database").order_by("slug")
        if tenant is not None:
            tenants = tenants.filter(slug=tenant)
            if not tenants.exists():
                raise CommandError(f"No tenant {tenant!r}.")
        by_status: dict[str, dict[str, int]] = defaultdict(dict)
        grouped = (
            Run.objects.filter(tenant__in=tenants)
            .values("tenant_id", "status")
            .annotate(n=Count("id"))
            .values_list("tenant_id", "status", "n")
        )
        for tenant_id, status, count in grouped:
            by_status[tenant_id][status] = count
        paths: dict[str, list[str]] = defaultdict(list)
        problems: dict[str, dict[str, int]] = defaultdict(lambda: defaultdict(int))
        for tenant_id, relpath, state in Run.objects.filter(tenant__in=tenants).values_list(
            "tenant_id", "database__path", "database__state"
        ):
            paths[tenant_id].append(relpath)
            if state != Database.State.READY:
                problems[tenant_id][state] += 1

        rows = []
        for t in tqdm(list(tenants), unit="tenant", disable=None, file=self.stderr):
            files = [t.database.path, *paths[t.id]]
            if t.database.state != Database.State.READY:
                problems[t.id][t.database.state] += 1
            rows.append(
                {
                    "tenant": t.slug,
                    "databases": len(files),
                    "bytes": sum(_size(relpath) for relpath in files),
                    "runs": by_status.get(t.id, {}),
                    "problems": dict(problems.get(t.id, {})),
                }
            )
            if queues:
                rows[-1]["tool_calls"] = tool_calls_open_counts(tenant=t)
        if as_json:
            for row in rows:
                self.stdout.write(json.dumps(row, sort_keys=True))
            return
        self.stdout.write(f"{'tenant':<32} {'dbs':>6} {'MiB':>10}  runs by status  [problems]")
        for row in rows:
            runs_text = ", ".join(f"{k} {v}" for k, v in sorted(row["runs"].items())) or "-"
            if "tool_calls" in row:
                runs_text += "  calls: " + ", ".join(
                    f"{k} {v}" for k, v in sorted(row["tool_calls"].items())
                )
            if row["problems"]:
                runs_text += (
                    "  [" + ", ".join(f"{k} {v}" for k, v in sorted(row["problems"].items())) + "]"
                )
            self.stdout.write(
                f"{row['tenant']:<32} {row['databases']:>6} {row['bytes'] / 2**20:>10.2f}  "
                f"{runs_text}"
            )


def _size(relpath: str) -> int:
    path = absolute(relpath)
    total = 0
    for candidate in (path, path.with_name(path.name + "-wal")):
        with suppress(FileNotFoundError):
            total += os.stat(candidate).st_size
    return total
