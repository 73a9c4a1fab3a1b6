"""Middleware that keeps every answer well-formed.

`ApiResponsesMiddleware` (first): every answer under /api/ in the API's shape, whatever produced
it. ninja answers a method a path does not take with a text/html 405; Django renders a bad Host
(`DisallowedHost`), a failed CSRF check or a crash in another middleware as an HTML page. This
middleware sees each of those answers and turns any non-JSON error under /api/ into
`{"error": {"code", "message"}}` with the same status and headers such as `Allow`. `HEAD` is
answered as `GET` without the body, as Django's class-based views do.

`FailSafeMiddleware` (last): 503, not 500, for pages outside the API (admin) when a database or
the process fails safe. The API renders these itself (project/api.py).
"""

import logging
from collections.abc import Callable
from http import HTTPStatus

from django.http import HttpRequest, HttpResponse, HttpResponseBase

from project.errors import error_response
from project.exceptions import ApplicationError
from tenancy import faults

logger = logging.getLogger(__name__)

API_PREFIX = "/api/"

# Error codes for statuses that have no handler of their own in project/api.py.
CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    411: "length_required",
    413: "too_large",
    414: "uri_too_long",
    415: "unsupported_media_type",
    429: "limit_reached",
    431: "headers_too_large",
    500: "internal_error",
    503: "unavailable",
}
KEPT_HEADERS = ("Allow", "WWW-Authenticate", "Retry-After")


def error_code(status: int) -> str:
    return CODES.get(status, f"http_{status}")


class ApiResponsesMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponseBase]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponseBase:
        if not request.path.startswith(API_PREFIX):
            return self.get_response(request)
        method = request.method or ""
        head = method == "HEAD"
        if head:
            request.method = "GET"
        response = self.get_response(request)
        if response.status_code >= 400 and not _is_json(response):
            response = _as_json_error(request, response, method)
        if head and isinstance(response, HttpResponse):
            # Content-Length stays that of the GET; gunicorn sends no body for HEAD anyway.
            response.content = b""
        return response


def _is_json(response: HttpResponseBase) -> bool:
    return response.get("Content-Type", "").split(";")[0].strip() == "application/json"


def _as_json_error(request: HttpRequest, response: HttpResponseBase, method: str) -> HttpResponse:
    status = response.status_code
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    message = f"{reason}."
    if status == 405:
        allowed = sorted({m.strip() for m in response.get("Allow", "").split(",") if m.strip()})
        if "GET" in allowed:
            allowed = sorted({*allowed, "HEAD"})
            response["Allow"] = ", ".join(allowed)
        message = f"{method[:20]} is not allowed on {request.path[:200]}; allowed: " + (
            ", ".join(allowed) or "none"
        )
    json_response = error_response(status, error_code(status), message)
    for header in KEPT_HEADERS:
        if header in response:
            json_response[header] = response[header]
    return json_response


class FailSafeMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exc: Exception) -> HttpResponse | None:
        if isinstance(exc, ApplicationError) and exc.status == 503:
            # Unavailable databases, quarantine, migrations, busy runs: retryable, never a 500.
            response = error_response(exc.status, exc.code, exc.message, **exc.extra)
            for header, value in exc.headers.items():
                response[header] = value
            return response
        if faults.descriptors_exhausted(exc):
            logger.error("out of file descriptors: %s", exc)
            return error_response(503, "unavailable", "The server is out of file descriptors.")
        return None
