"""MemoryEntry moved here from `tenants`; the table keeps its name, so only state changes."""

import django.utils.timezone
from django.db import migrations, models

import tenancy.scopes


class Migration(migrations.Migration):
    initial = True
    dependencies = [("tenants", "0002_tenant_limits")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.CreateModel(
                    name="MemoryEntry",
                    fields=[
                        ("key", models.CharField(max_length=200, primary_key=True, serialize=False)),
                        ("value", models.JSONField(null=True)),
                        ("version", models.PositiveIntegerField(default=1)),
                        ("size_bytes", models.PositiveIntegerField()),
                        ("created_at", models.DateTimeField(default=django.utils.timezone.now)),
                        ("updated_at", models.DateTimeField(default=django.utils.timezone.now)),
                    ],
                    options={
                        "db_table": "tenants_memoryentry",
                        "verbose_name_plural": "memory entries",
                    },
                    bases=(tenancy.scopes.TenantScoped, models.Model),
                ),
            ],
            database_operations=[],
        ),
    ]
