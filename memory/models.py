"""Tenant memory: key/value entries in each tenant's own database."""

from django.db import models
from django.utils import timezone

from tenancy.scopes import TenantScoped


class MemoryEntry(TenantScoped, models.Model):
    """A key/value entry of tenant memory; `/` or `:` in keys act as namespaces."""

    key = models.CharField(primary_key=True, max_length=200)
    value = models.JSONField(null=True)  # SQL NULL stands for JSON null
    version = models.PositiveIntegerField(default=1)
    size_bytes = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        # The table kept its name when the model moved here from `tenants` (decision 0012).
        db_table = "tenants_memoryentry"
        verbose_name_plural = "memory entries"

    def __str__(self) -> str:
        return self.key
