"""Async tool calls (issue 10): statuses queued, running and cancelled, `attempts`, and a partial
index of the open (queued or running) calls that queue counts read.

Added in place (ALTER TABLE ... ADD COLUMN, CREATE INDEX) rather than by Django's table remake,
which would drop the closed-run triggers on `runs_toolcall` (migration 0002). The new choices
are state only: SQLite stores the status as text either way.
"""

from django.db import migrations, models

STATUSES = [
    ("pending", "Pending"),
    ("queued", "Queued"),
    ("running", "Running"),
    ("succeeded", "Succeeded"),
    ("failed", "Failed"),
    ("cancelled", "Cancelled"),
]


class Migration(migrations.Migration):
    dependencies = [("runs", "0004_runinfo_fence")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'ALTER TABLE "runs_toolcall" ADD COLUMN "attempts" integer unsigned '
                    'NOT NULL DEFAULT 0 CHECK ("attempts" >= 0)',
                    'ALTER TABLE "runs_toolcall" DROP COLUMN "attempts"',
                    hints={"scope": "run"},
                ),
                migrations.RunSQL(
                    'CREATE INDEX "toolcall_open_idx" ON "runs_toolcall" ("status") '
                    "WHERE \"status\" IN ('queued', 'running')",
                    'DROP INDEX "toolcall_open_idx"',
                    hints={"scope": "run"},
                ),
            ],
            state_operations=[
                migrations.AlterField(
                    model_name="toolcall",
                    name="status",
                    field=models.CharField(choices=STATUSES, default="pending", max_length=16),
                ),
                migrations.AddField(
                    model_name="toolcall",
                    name="attempts",
                    field=models.PositiveIntegerField(default=0),
                ),
                migrations.AddIndex(
                    model_name="toolcall",
                    index=models.Index(
                        condition=models.Q(("status__in", ["queued", "running"])),
                        fields=["status"],
                        name="toolcall_open_idx",
                    ),
                ),
            ],
        )
    ]
