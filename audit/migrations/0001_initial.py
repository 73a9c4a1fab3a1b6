"""The run and tenant audit trails (decision 0034).

Both models live in the `audit` app; the router keeps each in its own scope because
`CreateModel` passes the (historical) model, whose scope marker is in `bases`. The trigger is
raw SQL, so it says its scope (`hints`); it refuses appends once the run is closed, like the
triggers of runs.0002.
"""

import tenancy.scopes
from django.db import migrations, models

def fields() -> list:
    return [
        ("seq", models.PositiveBigIntegerField(primary_key=True, serialize=False)),
        ("kind", models.CharField(max_length=32)),
        ("body", models.TextField(help_text="Canonical JSON of what the write changed.")),
        ("created_at", models.CharField(help_text="As stored by the database (UTC).", max_length=32)),
        ("prev_hash", models.CharField(max_length=64)),
        ("hash", models.CharField(max_length=64)),
    ]

TRIGGER = (
    'CREATE TRIGGER "audit_runentry_insert_closed" BEFORE INSERT ON "audit_runentry" '
    "WHEN (SELECT closed_at FROM runs_runinfo WHERE id = 1) IS NOT NULL "
    "BEGIN SELECT RAISE(ABORT, 'run_closed'); END"
)


class Migration(migrations.Migration):
    initial = True

    dependencies = [("runs", "0002_closed_triggers")]

    operations = [
        migrations.CreateModel(
            name="RunEntry",
            fields=fields(),
            options={"verbose_name_plural": "run audit entries"},
            bases=(tenancy.scopes.RunScoped, models.Model),
        ),
        migrations.CreateModel(
            name="TenantEntry",
            fields=fields(),
            options={"verbose_name_plural": "tenant audit entries"},
            bases=(tenancy.scopes.TenantScoped, models.Model),
        ),
        migrations.RunSQL(
            TRIGGER, 'DROP TRIGGER "audit_runentry_insert_closed"', hints={"scope": "run"}
        ),
    ]
