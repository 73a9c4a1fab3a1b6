"""A table rebuild (SQLite cannot alter a column's type): every row must survive, and the
trigger the rebuild drops with the old table is created again."""

from django.db import migrations, models


TENANT = {"scope": "tenant"}


class Migration(migrations.Migration):
    dependencies = [("fleetapp", "0003_sql_effects")]
    operations = [
        migrations.AlterField(
            model_name="note", name="text", field=models.CharField(max_length=500)
        ),
        migrations.RunSQL(
            "CREATE TRIGGER fleetapp_note_not_empty BEFORE INSERT ON fleetapp_note "
            "WHEN NEW.text = '' BEGIN SELECT RAISE(ABORT, 'empty note'); END",
            "DROP TRIGGER fleetapp_note_not_empty",
            hints=TENANT,
        ),
    ]
