"""Control plane: where a finished run's archive is, its size, checksum and audit head."""

from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [("runs", "0006_artifact")]

    operations = [
        migrations.AddField(
            model_name="run",
            name="archive_key",
            field=models.CharField(blank=True, default="", max_length=255),
        ),
        migrations.AddField(
            model_name="run", name="archive_bytes", field=models.BigIntegerField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="run",
            name="archive_sha256",
            field=models.CharField(blank=True, default="", max_length=64),
        ),
        migrations.AddField(
            model_name="run",
            name="archive_schema_version",
            field=models.CharField(blank=True, default="", max_length=32),
        ),
        migrations.AddField(
            model_name="run", name="archived_at", field=models.DateTimeField(blank=True, null=True)
        ),
        migrations.AddField(
            model_name="run",
            name="audit_head",
            field=models.CharField(
                blank=True, default="", help_text="Hash of the last audit entry.", max_length=64
            ),
        ),
    ]
