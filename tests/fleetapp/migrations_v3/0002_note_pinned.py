from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("fleetapp", "0001_initial")]
    operations = [
        migrations.AddField(
            model_name="note", name="pinned", field=models.BooleanField(default=False)
        ),
        migrations.AddIndex(
            model_name="note", index=models.Index(fields=["pinned"], name="note_pinned_idx")
        ),
    ]
