"""A tenant-scoped app whose second migration is the 'pending migration' of fleet tests."""

from django.db import models

from tenancy.scopes import TenantScoped


class Note(TenantScoped, models.Model):
    text = models.CharField(max_length=200)
    pinned = models.BooleanField(default=False)  # added by migrations_v2/0002

    class Meta:
        app_label = "fleetapp"

    def __str__(self) -> str:
        return self.text
