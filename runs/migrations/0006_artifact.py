"""Artifacts of a run (bytes in STORAGES["artifacts"], a row here), refused once closed."""

import django.utils.timezone
import tenancy.scopes
from django.db import migrations, models

TRIGGER = (
    'CREATE TRIGGER "runs_artifact_insert_closed" BEFORE INSERT ON "runs_artifact" '
    "WHEN (SELECT closed_at FROM runs_runinfo WHERE id = 1) IS NOT NULL "
    "BEGIN SELECT RAISE(ABORT, 'run_closed'); END"
)


class Migration(migrations.Migration):
    dependencies = [("runs", "0005_toolcall_queue_states")]

    operations = [
        migrations.CreateModel(
            name="Artifact",
            fields=[
                ("name", models.CharField(max_length=128, primary_key=True, serialize=False)),
                ("size", models.BigIntegerField()),
                ("sha256", models.CharField(max_length=64)),
                ("key", models.CharField(max_length=255)),
                (
                    "content_type",
                    models.CharField(default="application/octet-stream", max_length=255),
                ),
                ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
            ],
            bases=(tenancy.scopes.RunScoped, models.Model),
        ),
        migrations.RunSQL(
            TRIGGER, 'DROP TRIGGER "runs_artifact_insert_closed"', hints={"scope": "run"}
        ),
    ]
