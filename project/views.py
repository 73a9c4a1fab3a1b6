"""Views outside the versioned API: health check and JSON 404s under /api/."""

import os
import tempfile
from pathlib import Path

from django.conf import settings
from django.core.exceptions import DisallowedHost
from django.db import connections
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.defaults import bad_request as django_bad_request
from django.views.defaults import page_not_found

from project.errors import error_response


def healthz(request: HttpRequest) -> JsonResponse:
    """Check the control database, Redis when configured, and that DATA_DIR is writable."""
    checks: dict[str, str] = {}
    try:
        with connections["default"].cursor() as cursor:
            cursor.execute("SELECT 1")
        checks["control_db"] = "ok"
    except Exception as exc:
        checks["control_db"] = f"error: {exc}"
    if settings.REDIS_URL:
        try:
            import redis

            redis.Redis.from_url(
                settings.REDIS_URL, socket_timeout=1, socket_connect_timeout=1
            ).ping()
            checks["redis"] = "ok"
        except Exception as exc:
            checks["redis"] = f"error: {exc}"
    try:
        data_dir = Path(settings.DATA_DIR)
        with tempfile.NamedTemporaryFile(dir=data_dir, prefix=".healthz-") as probe:
            probe.write(b"ok")
            probe.flush()
            os.fsync(probe.fileno())
        checks["data_dir"] = "ok"
    except Exception as exc:
        checks["data_dir"] = f"error: {exc}"
    healthy = all(value == "ok" for value in checks.values())
    return JsonResponse(
        {"status": "ok" if healthy else "unavailable", "checks": checks},
        status=200 if healthy else 503,
    )


def bad_request(request: HttpRequest, exception: Exception) -> HttpResponse:
    """Django's 400 (a bad Host header, another `SuspiciousOperation`), as JSON under /api/."""
    if not request.path.startswith("/api/"):
        return django_bad_request(request, exception)
    if isinstance(exception, DisallowedHost):
        message = "The Host header names no host this server answers for (ALLOWED_HOSTS)."
    else:
        message = "The request was refused as malformed or suspicious."
    return error_response(400, "bad_request", message)


def not_found(request: HttpRequest, exception: Exception) -> HttpResponse:
    if request.path.startswith("/api/"):
        return error_response(404, "not_found", f"No endpoint at {request.path}.")
    return page_not_found(request, exception)
