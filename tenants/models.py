"""Control-plane models: tenants, API keys and the registry of every tenant and run database."""

from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

from tenancy.ids import new_id

SLUG_PATTERN = r"^[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?$"
slug_validator = RegexValidator(
    SLUG_PATTERN, "Use 1-63 lowercase letters, digits and inner hyphens (e.g. acme-prod)."
)


def _tenant_id() -> str:
    return new_id("ten")


class Database(models.Model):
    """One tenant or run SQLite file: where it lives and which schema it has (the fleet ledger)."""

    class Kind(models.TextChoices):
        TENANT = "tenant"
        RUN = "run"

    class State(models.TextChoices):
        READY = "ready"
        QUARANTINED = "quarantined"

    kind = models.CharField(max_length=8, choices=Kind.choices)
    path = models.CharField(max_length=255, unique=True, help_text="Relative to DATA_DIR.")
    home_node = models.CharField(max_length=64, default="local")
    schema_version = models.CharField(max_length=32, db_index=True)
    state = models.CharField(max_length=16, choices=State.choices, default=State.READY)
    last_error = models.TextField(blank=True, default="")
    created_at = models.DateTimeField(default=timezone.now)
    migrated_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        indexes = [models.Index(fields=["state"], name="database_state_idx")]

    def __str__(self) -> str:
        return self.path


class Tenant(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        SUSPENDED = "suspended"

    id = models.CharField(primary_key=True, max_length=32, default=_tenant_id, editable=False)
    slug = models.SlugField(max_length=63, unique=True, validators=[slug_validator])
    name = models.CharField(max_length=200, blank=True, default="")
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    database = models.OneToOneField(
        Database, on_delete=models.PROTECT, related_name="tenant_owner", editable=False
    )
    created_at = models.DateTimeField(default=timezone.now)
    deleted_at = models.DateTimeField(null=True, blank=True)
    max_active_runs = models.PositiveIntegerField(
        null=True, blank=True, help_text="Empty: TENANT_MAX_ACTIVE_RUNS."
    )
    max_run_db_bytes = models.BigIntegerField(
        null=True, blank=True, help_text="Empty: RUN_MAX_DB_BYTES."
    )
    run_idle_timeout_s = models.PositiveIntegerField(
        "run idle timeout (seconds)",
        null=True,
        blank=True,
        help_text="Runs with no write for this long expire. Empty: RUN_IDLE_TIMEOUT; 0: never.",
    )

    def __str__(self) -> str:
        return self.slug

    @property
    def idle_timeout_s(self) -> int:
        """Return the seconds without a write after which this tenant's runs expire (0: never)."""
        value = self.run_idle_timeout_s
        return int(settings.RUN_IDLE_TIMEOUT if value is None else value)

    @property
    def database_file(self) -> str:
        return self.database.path

    @property
    def schema_version(self) -> str:
        return self.database.schema_version


class ApiKey(models.Model):
    """An API key: only a SHA-256 of the raw key is stored, with a visible prefix to find it."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True, default="")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    key_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.tenant_id})"

    @property
    def is_active(self) -> bool:
        return self.revoked_at is None


class Generation(models.Model):
    """A counter every process polls to drop its memoised lookups (`tenants.revocation`).

    Used in embedded mode (no `REDIS_URL`); with Redis the counter lives in Redis instead.
    """

    name = models.CharField(primary_key=True, max_length=32)
    value = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return f"{self.name}={self.value}"
