"""A unique index: fails on a database that holds duplicate texts."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("fleetapp", "0002_note_pinned")]
    operations = [
        migrations.AddConstraint(
            model_name="note",
            constraint=models.UniqueConstraint(fields=["text"], name="note_text_uniq"),
        ),
    ]
