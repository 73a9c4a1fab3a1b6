"""The single RunInfo row, and triggers that refuse writes once the run is closed."""

from django.db import migrations

GUARDED = [
    ("runs_toolcall", "INSERT"),
    ("runs_toolcall", "UPDATE"),
    ("runs_event", "INSERT"),
    ("runs_statecheckpoint", "INSERT"),
]


def _trigger(table: str, action: str) -> str:
    return (
        f'CREATE TRIGGER "{table}_{action.lower()}_closed" BEFORE {action} ON "{table}" '
        "WHEN (SELECT closed_at FROM runs_runinfo WHERE id = 1) IS NOT NULL "
        "BEGIN SELECT RAISE(ABORT, 'run_closed'); END"
    )


class Migration(migrations.Migration):
    dependencies = [("runs", "0001_initial")]
    operations = [
        migrations.RunSQL(
            "INSERT INTO runs_runinfo (id, closed_at) VALUES (1, NULL)",
            "DELETE FROM runs_runinfo",
            hints={"scope": "run"},
        ),
        *[
            migrations.RunSQL(
                _trigger(table, action),
                f'DROP TRIGGER "{table}_{action.lower()}_closed"',
                hints={"scope": "run"},
            )
            for table, action in GUARDED
        ],
    ]
