"""Hash-chained audit trails: one in each run database, one in each tenant database.

Each entry carries the hash of the previous one and its own: SHA-256 over a canonical encoding
of (seq, kind, created_at, prev_hash, body) (`audit.chain`). A run's entries hold the rows each
write produced, so the log alone rebuilds the run (`audit.verify`, `audit.replay`). Entries are
appended in the transaction of the change they record; nothing updates or deletes them (the run
database's closed-run triggers refuse appends after completion, like every other write).
"""

from django.db import models

from tenancy.scopes import RunScoped, TenantScoped


class Entry(models.Model):
    seq = models.PositiveBigIntegerField(primary_key=True)
    kind = models.CharField(max_length=32)
    body = models.TextField(help_text="Canonical JSON of what the write changed.")
    created_at = models.CharField(max_length=32, help_text="As stored by the database (UTC).")
    prev_hash = models.CharField(max_length=64)
    hash = models.CharField(max_length=64)

    class Meta:
        abstract = True

    def __str__(self) -> str:
        return f"{self.seq} {self.kind}"


class RunEntry(RunScoped, Entry):
    """An entry of the run's audit trail (table `audit_runentry`, in each run database)."""

    class Meta:
        verbose_name_plural = "run audit entries"


class TenantEntry(TenantScoped, Entry):
    """An entry of the tenant's audit trail (table `audit_tenantentry`, in each tenant database)."""

    class Meta:
        verbose_name_plural = "tenant audit entries"
