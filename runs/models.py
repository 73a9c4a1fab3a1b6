"""The run registry (control plane) and the models of each run's own database."""

from django.conf import settings
from django.db import models
from django.utils import timezone

from tenancy.ids import new_id
from tenancy.scopes import RunScoped
from tenants.models import Database, Tenant

# Rules for client-chosen names, shared by the services (checks) and the API (OpenAPI schema).
NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:/-]{0,127}$"
NAME_RULE = "1-128 characters from A-Z a-z 0-9 _ . : / -, starting with a letter, digit or _"
LABEL_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:/=-]{0,63}$"
LABEL_RULE = "1-64 characters from A-Z a-z 0-9 _ . : / = -"
MAX_LABELS = 32


def _run_id() -> str:
    return new_id("run")


class Run(models.Model):
    """A registered agent run. Counts and sizes are copied here when the run finishes, so
    listing runs never opens run databases."""

    class Status(models.TextChoices):
        ACTIVE = "active"
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        EXPIRED = "expired"  # no write for the tenant's idle timeout (`runs_expire_idle`)

    id = models.CharField(primary_key=True, max_length=32, default=_run_id, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="runs")
    database = models.OneToOneField(
        Database, on_delete=models.PROTECT, related_name="run_owner", editable=False
    )
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ACTIVE)
    metadata = models.JSONField(default=dict, blank=True)
    labels = models.JSONField(default=list, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    finished_at = models.DateTimeField(null=True, blank=True)
    summary = models.JSONField(null=True, blank=True)
    tool_calls = models.PositiveIntegerField(null=True, blank=True)
    events = models.PositiveIntegerField(null=True, blank=True)
    state_version = models.PositiveIntegerField(null=True, blank=True)
    db_bytes = models.BigIntegerField(null=True, blank=True)
    # Set once the run's database is in STORAGES["archives"] (audit.archive); the local file
    # is then removed and reads go to a restored read-only copy.
    archive_key = models.CharField(max_length=255, blank=True, default="")
    archive_bytes = models.BigIntegerField(null=True, blank=True)
    archive_sha256 = models.CharField(max_length=64, blank=True, default="")
    archive_schema_version = models.CharField(max_length=32, blank=True, default="")
    archived_at = models.DateTimeField(null=True, blank=True)
    audit_head = models.CharField(
        max_length=64, blank=True, default="", help_text="Hash of the last audit entry."
    )

    class Meta:
        indexes = [
            models.Index(fields=["tenant", "-created_at", "-id"], name="run_tenant_created_idx"),
            models.Index(fields=["tenant", "status"], name="run_tenant_status_idx"),
        ]

    def __str__(self) -> str:
        return self.id

    @property
    def is_active(self) -> bool:
        return self.status == self.Status.ACTIVE

    @property
    def max_db_bytes(self) -> int:
        limit = self.tenant.max_run_db_bytes
        return int(limit if limit is not None else settings.RUN_MAX_DB_BYTES)

    @property
    def duration_s(self) -> float | None:
        if self.finished_at is None:
            return None
        return (self.finished_at - self.created_at).total_seconds()


# --- Run-scoped: one SQLite file per run ----------------------------------------------------------
# Triggers (migration 0002) refuse writes to these tables once `RunInfo.closed_at` is set, so a
# write that raced `complete` cannot land after it. A migration that rebuilds one of these tables
# (SQLite table remake) drops its triggers: recreate them in the same migration.


class RunInfo(RunScoped, models.Model):
    """The single row (id=1) saying whether the run's database still takes writes."""

    id = models.PositiveSmallIntegerField(primary_key=True, default=1)
    closed_at = models.DateTimeField(null=True, blank=True)
    # The highest lease fencing token that has written; lower ones are refused (runs.writer).
    fence = models.BigIntegerField(default=0)

    def __str__(self) -> str:
        return "closed" if self.closed_at else "open"


class ToolCall(RunScoped, models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"  # recorded by the agent, which PATCHes its outcome
        QUEUED = "queued"  # async: waiting for a worker (or for its next retry)
        RUNNING = "running"  # async: a worker claimed it (attempt `attempts`)
        SUCCEEDED = "succeeded"
        FAILED = "failed"
        CANCELLED = "cancelled"

    TERMINAL = frozenset({Status.SUCCEEDED, Status.FAILED, Status.CANCELLED})

    seq = models.AutoField(primary_key=True)
    name = models.CharField(max_length=128)
    args = models.JSONField(default=dict, null=True)  # SQL NULL stands for JSON null
    digest = models.CharField(max_length=64, help_text="SHA-256 of name and args.")
    idempotency_key = models.CharField(max_length=200, null=True, blank=True, unique=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING)
    result = models.JSONField(null=True, blank=True)
    error = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    completed_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(null=True, blank=True)
    duration_ms = models.FloatField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    cost_usd = models.FloatField(null=True, blank=True)
    # Async calls: how many times a worker claimed it (retries and redeliveries included). A
    # worker records an outcome only for the attempt it claimed (runs.services.tool_calls_settle).
    attempts = models.PositiveIntegerField(default=0)

    class Meta:
        indexes = [
            models.Index(
                fields=["status"],
                name="toolcall_open_idx",
                condition=models.Q(status__in=["queued", "running"]),
            )
        ]

    def __str__(self) -> str:
        return f"{self.seq} {self.name}"


class Event(RunScoped, models.Model):
    seq = models.AutoField(primary_key=True)
    kind = models.CharField(max_length=100, db_index=True)
    payload = models.JSONField(null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"{self.seq} {self.kind}"


class StateCheckpoint(RunScoped, models.Model):
    """Every version of the run's state is kept; the highest is current."""

    version = models.PositiveIntegerField(primary_key=True)
    state = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"v{self.version}"


ARTIFACT_NAME_PATTERN = r"^[A-Za-z0-9_][A-Za-z0-9_.:-]{0,127}$"
ARTIFACT_NAME_RULE = "1-128 characters from A-Z a-z 0-9 _ . : -, starting with a letter, digit or _"


class Artifact(RunScoped, models.Model):
    """A file the run produced: its bytes are in STORAGES["artifacts"] under `key`."""

    name = models.CharField(primary_key=True, max_length=128)
    size = models.BigIntegerField()
    sha256 = models.CharField(max_length=64)
    key = models.CharField(max_length=255)
    content_type = models.CharField(max_length=255, default="application/octet-stream")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name
