import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser
from tqdm import tqdm

from tenancy.dbcheck import databases_checked


class Command(BaseCommand):
    help = (
        "Check this node's database registry against the disk: files without a registry row "
        "(orphans), rows without a file, databases behind the code's schema, sizes, and "
        "PRAGMA quick_check of every file (--deep: integrity_check). --fix removes orphan files "
        "and quarantines missing or damaged databases. Exits 1 when anything was found."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument(
            "--deep", action="store_true", help="PRAGMA integrity_check instead of quick_check."
        )
        parser.add_argument(
            "--fix",
            action="store_true",
            help="Remove orphan files; quarantine missing and damaged databases.",
        )
        parser.add_argument(
            "--orphan-age",
            type=float,
            default=600.0,
            metavar="SECONDS",
            help="Only files unregistered for this long are orphans (default 600): a "
            "provisioning may be registering a younger one.",
        )
        parser.add_argument(
            "--json", action="store_true", dest="as_json", help="One JSON object on stdout."
        )

    def handle(
        self,
        *args: Any,
        deep: bool,
        fix: bool,
        orphan_age: float,
        as_json: bool,
        **options: Any,
    ) -> None:
        bar = tqdm(total=0, unit="file", desc="dbcheck", disable=None, file=self.stderr)
        try:
            report = databases_checked(
                deep=deep,
                fix=fix,
                orphan_min_age_s=orphan_age,
                on_total=lambda n: bar.reset(total=n),
                on_progress=bar.update,
            )
        finally:
            bar.close()
        if as_json:
            self.stdout.write(json.dumps(report.as_dict()))
        else:
            self.stdout.write(
                f"{report.checked} databases, {report.bytes_total} bytes, "
                f"{len(report.findings)} findings."
            )
            for finding in report.findings:
                fixed = " (fixed)" if finding.fixed else ""
                self.stdout.write(f"{finding.kind.upper()} {finding.path}: {finding.detail}{fixed}")
        if report.findings:
            raise CommandError(
                f"{len(report.findings)} finding(s). Orphans: `dbcheck --fix` removes them; "
                "damaged: restore the file, then mark it ready in the admin; behind: "
                "`migrate_tenants`.",
                returncode=1,
            )
