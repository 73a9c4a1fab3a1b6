import tempfile
from pathlib import Path
from typing import Any

from django.core.files.storage import storages
from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.snapshot import file_sha256
from audit.verify import verify_file
from runs.models import Run
from tenancy.ids import is_id
from tenancy.paths import absolute


class Command(BaseCommand):
    help = (
        "Verify a run: the archive's SHA-256 against the control plane, the audit trail's hash "
        "chain, and every audited row against the trail. Names the first bad record; exit 1."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("target", help="A run id, or the path of a run's .sqlite file.")

    def handle(self, *args: Any, target: str, **options: Any) -> None:
        if is_id(target, "run"):
            run = Run.objects.select_related("database").filter(pk=target).first()
            if run is None:
                raise CommandError(f"No run {target!r}.")
            if run.archived_at is None:
                self._check(absolute(run.database.path), None, label=f"run {run.id} (live)")
                return
            with tempfile.TemporaryDirectory() as tmp:
                local = Path(tmp) / "archive.sqlite3"
                with (
                    storages["archives"].open(run.archive_key, "rb") as src,
                    local.open("wb") as dst,
                ):
                    while chunk := src.read(4 * 1024 * 1024):
                        dst.write(chunk)
                problems = []
                if file_sha256(local) != run.archive_sha256:
                    problems.append(
                        f"archive {run.archive_key}: SHA-256 differs from the control plane's"
                    )
                self._check(local, run.audit_head, label=f"run {run.id}", problems=problems)
            return
        path = Path(target)
        if not path.is_file():
            raise CommandError(f"{target!r} is neither a run id nor a file.")
        self._check(path, None, label=str(path))

    def _check(
        self, path: Path, head: str | None, *, label: str, problems: list[str] | None = None
    ) -> None:
        problems = list(problems or [])
        if not path.exists():
            raise CommandError(f"{label}: its database file {path} is missing.")
        report = verify_file(path, expected_head=head)
        if report.first:
            problems.append(report.first)
        if problems:
            for problem in problems:
                self.stderr.write(problem)
            raise CommandError(f"{label}: FAILED, first bad record: {problems[-1]}")
        self.stdout.write(f"{label}: OK, {report.entries} audit entries, head {report.head}")
