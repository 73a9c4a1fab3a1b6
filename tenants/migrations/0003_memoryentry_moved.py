"""MemoryEntry moved to the `memory` app (same table): drop it from this app's state only."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [("tenants", "0002_tenant_limits"), ("memory", "0001_initial")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.DeleteModel(name="MemoryEntry")],
            database_operations=[],
        ),
    ]
