"""Admin: runs per tenant, and a read-only browser of one run's database."""

from typing import Any

from django.contrib import admin
from django.core.exceptions import PermissionDenied
from django.db.models import Count
from django.http import Http404, HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils.html import format_html

from runs.models import Event, Run, StateCheckpoint, ToolCall
from runs.selectors import tool_calls_open_counts
from tenancy.context import run_context
from tenants.models import Tenant

# What the browser shows of a run's own database: staff status alone never shows tenant data.
BROWSE_PERMISSIONS = (
    "runs.view_run",
    "runs.view_toolcall",
    "runs.view_event",
    "runs.view_statecheckpoint",
)


@admin.register(Run)
class RunAdmin(admin.ModelAdmin):
    change_list_template = "admin/runs/run_change_list.html"
    list_display = (
        "id",
        "tenant",
        "status",
        "created_at",
        "finished_at",
        "tool_calls",
        "events",
        "db_bytes",
    )
    list_filter = ("status", "tenant")
    search_fields = ("id", "tenant__slug")
    list_select_related = ("tenant",)
    readonly_fields = (
        "id",
        "tenant",
        "database",
        "status",
        "metadata",
        "labels",
        "created_at",
        "finished_at",
        "summary",
        "tool_calls",
        "events",
        "state_version",
        "db_bytes",
        "browse_link",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False  # runs are created through the API, which provisions their database

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def changelist_view(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        extra_context = {**(extra_context or {}), "queues_url": reverse("admin:runs_run_queues")}
        return super().changelist_view(request, extra_context)

    @admin.display(description="run database")
    def browse_link(self, obj: Run) -> str:
        url = reverse("admin:runs_run_browse", args=[obj.pk])
        return format_html('<a href="{}">Browse tool calls, events and state</a>', url)

    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<str:run_id>/browse/",
                self.admin_site.admin_view(self.browse_view),
                name="runs_run_browse",
            ),
            path(
                "queues/",
                self.admin_site.admin_view(self.queues_view),
                name="runs_run_queues",
            ),
        ]
        return own + super().get_urls()

    def browse_view(self, request: HttpRequest, run_id: str) -> HttpResponse:
        if not request.user.has_perms(BROWSE_PERMISSIONS):
            raise PermissionDenied(
                "Browsing a run needs the view permissions on runs, tool calls, events and "
                "state checkpoints."
            )
        run = Run.objects.select_related("tenant", "database").filter(pk=run_id).first()
        if run is None:
            raise Http404("No such run.")
        with run_context(run):
            calls = list(ToolCall.objects.order_by("-seq")[:200])
            events = list(Event.objects.order_by("-seq")[:200])
            state = StateCheckpoint.objects.order_by("-version").first()
        context = {
            **self.admin_site.each_context(request),
            "title": f"Run {run.id} of {run.tenant.slug}",
            "run": run,
            "calls": calls,
            "events": events,
            "state": state,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/runs/browse.html", context)

    def queues_view(self, request: HttpRequest) -> HttpResponse:
        """Queued and running async tool calls per tenant (Flower-style, without Flower)."""
        if not request.user.has_perms(BROWSE_PERMISSIONS):
            raise PermissionDenied("The queue counts need the view permissions of run browsing.")
        active = (
            Run.objects.filter(status=Run.Status.ACTIVE)
            .values("tenant")
            .annotate(n=Count("id"))
            .values_list("tenant", "n")
        )
        per_tenant = dict(active)
        rows = []
        for tenant in Tenant.objects.filter(pk__in=per_tenant).order_by("slug"):
            counts = tool_calls_open_counts(tenant=tenant)
            rows.append({"tenant": tenant, "active_runs": per_tenant[tenant.pk], **counts})
        context = {
            **self.admin_site.each_context(request),
            "title": "Async tool calls per tenant",
            "rows": rows,
            "opts": self.model._meta,
        }
        return TemplateResponse(request, "admin/runs/queues.html", context)
