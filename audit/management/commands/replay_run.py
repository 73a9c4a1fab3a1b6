import json
from pathlib import Path
from typing import Any

from django.core.management.base import BaseCommand, CommandError, CommandParser

from audit.replay import file_entries, replay, run_entries
from runs.models import Run
from tenancy.ids import is_id


class Command(BaseCommand):
    help = (
        "Print a run's timeline from its audit trail alone and the state it rebuilds, as of "
        "tool call SEQ (--until) or the end."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("target", help="A run id, or the path of a run's .sqlite file.")
        parser.add_argument("--until", type=int, metavar="SEQ", help="Stop before tool call SEQ+1.")

    def handle(self, *args: Any, target: str, until: int | None, **options: Any) -> None:
        if is_id(target, "run"):
            run = Run.objects.select_related("tenant", "database").filter(pk=target).first()
            if run is None:
                raise CommandError(f"No run {target!r}.")
            history = run_entries(run)
        elif Path(target).is_file():
            history = file_entries(Path(target))
        else:
            raise CommandError(f"{target!r} is neither a run id nor a file.")
        result = replay(history, until=until)
        for line in result.timeline:
            self.stdout.write(line)
        summary = {
            "tool_calls": result.tool_calls,
            "events": result.events,
            "state_version": result.state_version,
            "state": result.state,
        }
        self.stdout.write(json.dumps(summary))
