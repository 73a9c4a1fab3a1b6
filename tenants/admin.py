"""Admin: tenants (creating one provisions its database, deleting one removes its files), API
keys, the database registry (with each file's fault state and a recheck action), and each
tenant's memory, read-only."""

from typing import Any

from django.contrib import admin, messages
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.urls import path, reverse
from django.utils.html import format_html

from memory.admin import memory_browser
from project.exceptions import ApplicationError
from tenancy.faults import database_recheck
from tenants.models import ApiKey, Database, Tenant
from tenants.services import (
    api_key_create,
    api_key_revoke,
    tenant_create,
    tenant_delete,
    tenant_save,
)

LIMITS = ("max_active_runs", "max_run_db_bytes", "run_idle_timeout_s")


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = ("slug", "name", "status", "id", "schema_version", "db_state", "created_at")
    list_filter = ("status",)
    search_fields = ("slug", "name", "id")
    readonly_fields = ("id", "database_file", "schema_version", "created_at", "memory_link")
    fields = ("slug", "name", "status", *LIMITS, *readonly_fields, "deleted_at")
    list_select_related = ("database",)

    @admin.display(description="database state")
    def db_state(self, obj: Tenant) -> str:
        return obj.database.state

    @admin.display(description="memory")
    def memory_link(self, obj: Tenant) -> str:
        if not obj.pk:
            return "-"
        url = reverse("admin:tenants_tenant_memory", args=[obj.pk])
        return format_html('<a href="{}">Browse memory</a>', url)

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> Any:
        return (*self.readonly_fields, "slug") if obj else self.readonly_fields

    def save_model(self, request: HttpRequest, obj: Tenant, form: Any, change: bool) -> None:
        if change:
            # Suspension and limits reach every process within a second (decision 0025).
            tenant_save(tenant=obj)
            return
        # A new tenant is provisioned (template copy + registration), never a bare row.
        try:
            created = tenant_create(slug=obj.slug, name=obj.name)
        except ApplicationError as exc:
            self.message_user(request, exc.message, messages.ERROR)
            raise
        obj.pk, obj.database, obj.created_at = created.pk, created.database, created.created_at
        obj._state.adding = False
        limits = {name: getattr(obj, name) for name in LIMITS if getattr(obj, name) is not None}
        if limits:
            for name, value in limits.items():
                setattr(created, name, value)
            tenant_save(tenant=created, fields=limits)

    def delete_model(self, request: HttpRequest, obj: Tenant) -> None:
        # Files, registry rows and revocation in one service (decision 0026), never a bare
        # row delete that would leave the tenant's databases on disk.
        tenant_delete(tenant=obj)

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[Tenant]) -> None:
        for tenant in queryset.select_related("database"):
            tenant_delete(tenant=tenant)

    def get_deleted_objects(
        self, objs: Any, request: HttpRequest
    ) -> tuple[list[str], dict[str, int], set[str], list[str]]:
        # Keys and runs go with their tenant through `tenant_delete`; deleting a tenant needs
        # only the permission to delete tenants, not to delete runs one by one in the admin.
        to_delete, counts, _perms_needed, protected = super().get_deleted_objects(objs, request)
        return to_delete, counts, set(), protected

    def get_urls(self) -> list[Any]:
        own = [
            path(
                "<str:tenant_id>/memory/",
                self.admin_site.admin_view(self.memory_view),
                name="tenants_tenant_memory",
            )
        ]
        return own + super().get_urls()

    def memory_view(self, request: HttpRequest, tenant_id: str) -> HttpResponse:
        return memory_browser(self.admin_site, request, tenant_id)


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = ("prefix", "tenant", "name", "created_at", "last_used_at", "revoked_at")
    list_filter = ("revoked_at",)
    search_fields = ("prefix", "tenant__slug", "name")
    readonly_fields = ("prefix", "created_at", "last_used_at", "revoked_at")
    fields = ("tenant", "name", *readonly_fields)
    actions = ("revoke",)

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return obj is None and super().has_change_permission(request, obj)

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # Deleting would skip revocation (every process's memo must drop the key): revoke.
        return False

    def save_model(self, request: HttpRequest, obj: ApiKey, form: Any, change: bool) -> None:
        key, raw = api_key_create(tenant=obj.tenant, name=obj.name)
        obj.pk, obj.prefix, obj.key_hash = key.pk, key.prefix, key.key_hash
        obj._state.adding = False
        self.message_user(
            request,
            f"API key for {obj.tenant.slug} (shown only now, copy it): {raw}",
            messages.WARNING,
        )

    @admin.action(description="Revoke selected keys")
    def revoke(self, request: HttpRequest, queryset: QuerySet[ApiKey]) -> None:
        for key in queryset:
            api_key_revoke(key=key)
        self.message_user(request, f"Revoked {queryset.count()} key(s).")


@admin.register(Database)
class DatabaseAdmin(admin.ModelAdmin):
    list_display = (
        "path",
        "kind",
        "schema_version",
        "state",
        "error",
        "home_node",
        "migrated_at",
    )
    list_filter = ("kind", "state", "schema_version", "home_node")
    search_fields = ("path",)
    readonly_fields = [f.name for f in Database._meta.fields]
    actions = ("recheck",)

    @admin.display(description="last error")
    def error(self, obj: Database) -> str:
        return obj.last_error[:120]

    @admin.action(description="Recheck selected files (header + quick_check)")
    def recheck(self, request: HttpRequest, queryset: QuerySet[Database]) -> None:
        results = [f"{db.path}: {database_recheck(db)}" for db in queryset[:100]]
        self.message_user(request, "; ".join(results) or "Nothing selected.")

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
