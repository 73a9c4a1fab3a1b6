"""SQL that a first-word filter would drop: a CTE UPDATE, list-form RunSQL with comments,
a `PRAGMA user_version` write, and a trigger (which a later table rebuild must keep)."""

from django.db import migrations

TENANT = {"scope": "tenant"}


class Migration(migrations.Migration):
    dependencies = [("fleetapp", "0002_note_pinned")]
    operations = [
        migrations.RunSQL(
            "WITH urgent AS (SELECT id FROM fleetapp_note WHERE text LIKE '!%') "
            "UPDATE fleetapp_note SET pinned = 1 WHERE id IN (SELECT id FROM urgent)",
            migrations.RunSQL.noop,
            hints=TENANT,
        ),
        migrations.RunSQL(
            [
                "-- fix the typo the importer made\n"
                "UPDATE fleetapp_note SET text = 'fixed-' || substr(text, 5) "
                "WHERE text LIKE 'fix-%'",
                "/* one marker row per database */ "
                "INSERT INTO fleetapp_note (text, pinned) VALUES ('added-by-migration', 0)",
            ],
            migrations.RunSQL.noop,
            hints=TENANT,
        ),
        migrations.RunSQL("PRAGMA user_version = 7", "PRAGMA user_version = 0", hints=TENANT),
        migrations.RunSQL(
            "CREATE TRIGGER fleetapp_note_not_empty BEFORE INSERT ON fleetapp_note "
            "WHEN NEW.text = '' BEGIN SELECT RAISE(ABORT, 'empty note'); END",
            "DROP TRIGGER fleetapp_note_not_empty",
            hints=TENANT,
        ),
    ]
