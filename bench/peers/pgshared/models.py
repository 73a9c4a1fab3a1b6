import uuid

from django.db import models
from django.utils import timezone


class Tenant(models.Model):
    slug = models.SlugField(unique=True)
    key_hash = models.CharField(max_length=64, unique=True)

    class Meta:
        db_table = "tenant"

    def __str__(self) -> str:
        return self.slug


class Run(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="runs")
    last_seq = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "run"

    def __str__(self) -> str:
        return str(self.id)


class ToolCall(models.Model):
    run = models.ForeignKey(Run, on_delete=models.CASCADE, related_name="tool_calls")
    seq = models.PositiveIntegerField()
    name = models.CharField(max_length=128)
    args = models.JSONField(default=dict)
    status = models.CharField(max_length=16, default="pending")
    result = models.JSONField(null=True)
    error = models.JSONField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "tool_call"
        # (run_id, seq): the unique index every read by seq uses.
        constraints = [models.UniqueConstraint(fields=["run", "seq"], name="tool_call_run_seq")]

    def __str__(self) -> str:
        return f"{self.run_id}/{self.seq}"
