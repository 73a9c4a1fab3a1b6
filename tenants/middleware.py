"""Resolve the API key of /api/v1/ requests and bind its tenant for the rest of the request.

Fails closed: an unknown key binds nothing, so the API answers 401 and tenant-scoped queries
raise instead of falling back to another database.
"""

import logging
from collections.abc import Callable

from django.db import DatabaseError
from django.http import HttpRequest, HttpResponse

from project.errors import error_response
from tenancy.context import tenant_context
from tenants.models import Database
from tenants.services import tenant_for_api_key

logger = logging.getLogger(__name__)


class ApiKeyTenantMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        request.tenant = None  # type: ignore[attr-defined]
        if not request.path.startswith("/api/v1/"):
            return self.get_response(request)
        scheme, _, raw = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not raw.strip():
            return self.get_response(request)
        try:
            tenant = tenant_for_api_key(raw.strip())
        except DatabaseError:
            logger.exception("control plane unreachable while checking an API key")
            return error_response(503, "unavailable", "The control plane is unreachable; retry.")
        if tenant is None:
            return self.get_response(request)
        if tenant.database.state == Database.State.QUARANTINED:
            return error_response(
                503,
                "database_quarantined",
                "This tenant's database failed a schema migration and is quarantined; "
                "an operator must fix it and rerun `manage.py migrate_tenants`.",
            )
        request.tenant = tenant  # type: ignore[attr-defined]
        with tenant_context(tenant):
            return self.get_response(request)
