"""503, not 500, for pages outside the API (admin) when a database or the process fails safe.

The API renders these itself (project/api.py); this covers every other Django view.
"""

import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from project.errors import error_response
from tenancy import faults
from tenancy.exceptions import ConnectionsExhausted, DatabaseUnavailable

logger = logging.getLogger(__name__)


class FailSafeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, DatabaseUnavailable | ConnectionsExhausted):
            return error_response(exc.status, exc.code, exc.message, **exc.extra)
        if faults.descriptors_exhausted(exc):
            logger.error("out of file descriptors: %s", exc)
            return error_response(503, "unavailable", "The server is out of file descriptors.")
        return None
