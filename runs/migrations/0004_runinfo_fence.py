"""`runs_runinfo.fence`: the highest lease fencing token that has written (runs.writer).

Added in place (ALTER TABLE ... ADD COLUMN with a constant default) rather than by Django's
table remake, which would rebuild `runs_runinfo` under the closed-run triggers that read it.
"""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runs", "0003_run_status_expired")]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    'ALTER TABLE "runs_runinfo" ADD COLUMN "fence" bigint NOT NULL DEFAULT 0',
                    'ALTER TABLE "runs_runinfo" DROP COLUMN "fence"',
                    hints={"scope": "run"},
                )
            ],
            state_operations=[
                migrations.AddField(
                    model_name="runinfo", name="fence", field=models.BigIntegerField(default=0)
                )
            ],
        )
    ]
