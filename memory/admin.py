"""Admin: a read-only browser of one tenant's memory (tenant page -> "Browse memory")."""

from django.contrib import messages
from django.contrib.admin import AdminSite
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import reverse

from memory.models import MemoryEntry
from tenancy.context import tenant_context
from tenants.models import Tenant

VIEW_PERMISSIONS = ("tenants.view_tenant", "memory.view_memoryentry")


def memory_browser(site: AdminSite, request: HttpRequest, tenant_id: str) -> HttpResponse:
    """Render up to 500 memory entries of one tenant, optionally under a key prefix.

    Staff status is not enough: tenant data needs `memory.view_memoryentry` (403 otherwise).
    """
    if not request.user.has_perms(VIEW_PERMISSIONS):
        raise PermissionDenied("Browsing memory needs the 'view memory entry' permission.")
    tenant = Tenant.objects.select_related("database").filter(pk=tenant_id).first()
    if tenant is None:
        messages.error(request, "No such tenant.")
        return HttpResponseRedirect(reverse("admin:tenants_tenant_changelist"))
    prefix = request.GET.get("prefix", "")
    with tenant_context(tenant):
        rows = MemoryEntry.objects.order_by("key")
        if prefix:
            rows = rows.filter(key__gte=prefix, key__lt=prefix + "\U0010ffff")
        entries = list(rows[:500])
    context = {
        **site.each_context(request),
        "title": f"Memory of {tenant.slug}",
        "tenant": tenant,
        "entries": entries,
        "prefix": prefix,
        "opts": Tenant._meta,
    }
    return TemplateResponse(request, "admin/memory/memory.html", context)
