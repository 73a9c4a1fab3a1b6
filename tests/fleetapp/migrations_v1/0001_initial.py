import django.db.models
from django.db import migrations, models

import tenancy.scopes


class Migration(migrations.Migration):
    initial = True
    dependencies = []
    operations = [
        migrations.CreateModel(
            name="Note",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("text", models.CharField(max_length=200)),
            ],
            bases=(tenancy.scopes.TenantScoped, django.db.models.Model),
        ),
    ]
