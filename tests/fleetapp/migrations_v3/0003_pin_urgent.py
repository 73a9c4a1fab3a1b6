from django.db import migrations


def pin_urgent(apps, schema_editor):
    Note = apps.get_model("fleetapp", "Note")
    Note.objects.using(schema_editor.connection.alias).filter(text__startswith="!").update(
        pinned=True
    )


class Migration(migrations.Migration):
    dependencies = [("fleetapp", "0002_note_pinned")]
    operations = [
        migrations.RunPython(pin_urgent, migrations.RunPython.noop, hints={"scope": "tenant"}),
    ]
