"""The NinjaAPI instance: authentication, error rendering, and each app's router."""

import logging
from typing import Any

from django.core.exceptions import RequestDataTooBig
from django.db import DatabaseError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError, ValidationError, ValidationErrorContext
from ninja.parser import Parser
from ninja.security import HttpBearer

from project import openapi, strictjson
from project.errors import error_response
from project.exceptions import ApplicationError
from tenancy import faults

logger = logging.getLogger(__name__)


class ApiKeyAuth(HttpBearer):
    """`Authorization: Bearer <api key>`; the key names the tenant.

    `tenants.middleware.ApiKeyTenantMiddleware` resolves the key and binds the tenant before
    the view runs; this only fails closed when it did not.
    """

    def authenticate(self, request: HttpRequest, token: str) -> Any:
        return getattr(request, "tenant", None)


class StrictJSONParser(Parser):
    """Bodies through `project.strictjson`: anything it refuses is a 400 saying why."""

    def parse_body(self, request: HttpRequest) -> Any:
        return strictjson.loads(request.body)


class Api(NinjaAPI):
    def get_openapi_schema(self, **kwargs: Any) -> Any:
        """Return the schema with every limit and error code (`project.openapi`)."""
        return openapi.extend(super().get_openapi_schema(**kwargs))

    def validation_error_from_error_contexts(
        self, error_contexts: list[ValidationErrorContext]
    ) -> ValidationError:
        """Name a body field `body.name`, not `body.<view argument>.name`.

        ninja wraps a body schema in a model whose one field is the view's argument; the client
        never sees that name.
        """
        errors = []
        for context in error_contexts:
            wrapper = getattr(context.model, "__read_from_single_attr__", None)
            for error in super().validation_error_from_error_contexts([context]).errors:
                loc = tuple(error.get("loc", ()))
                if wrapper and loc[:2] == ("body", wrapper):
                    error["loc"] = ("body", *loc[2:])
                errors.append(error)
        return ValidationError(errors)


api = Api(
    parser=StrictJSONParser(),
    title="agentdb",
    version="1",
    description=(
        "Database-per-tenant and database-per-run backend for agent applications. "
        "Every endpoint under /api/v1/ takes `Authorization: Bearer <api key>`. "
        'Errors answer `{"error": {"code", "message"}}`.'
    ),
    auth=ApiKeyAuth(),
    urls_namespace="api",
)


@api.exception_handler(ApplicationError)
def _application_error(request: HttpRequest, exc: ApplicationError) -> HttpResponse:
    response = error_response(exc.status, exc.code, exc.message, **exc.extra)
    for header, value in exc.headers.items():
        response[header] = value
    return response


@api.exception_handler(ValidationError)
def _validation_error(request: HttpRequest, exc: ValidationError) -> HttpResponse:
    problems = []
    for err in exc.errors:
        where = ".".join(str(part) for part in err.get("loc", ()))
        problems.append(f"{where}: {err.get('msg', 'invalid')}")
    details = [
        {"loc": e.get("loc"), "msg": e.get("msg"), "type": e.get("type")} for e in exc.errors
    ]
    return error_response(422, "invalid", "; ".join(problems) or "Invalid input.", details=details)


@api.exception_handler(AuthenticationError)
def _unauthorized(request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    response = error_response(
        401,
        "unauthorized",
        "Missing, unknown or revoked API key: send `Authorization: Bearer <key>`.",
    )
    response["WWW-Authenticate"] = "Bearer"
    return response


@api.exception_handler(HttpError)
def _http_error(request: HttpRequest, exc: HttpError) -> HttpResponse:
    if isinstance(exc.__cause__, ApplicationError):  # ninja wraps what the parser raised
        return _application_error(request, exc.__cause__)
    code = "bad_request" if exc.status_code == 400 else f"http_{exc.status_code}"
    return error_response(exc.status_code, code, str(exc))


@api.exception_handler(Http404)
def _not_found(request: HttpRequest, exc: Http404) -> HttpResponse:
    return error_response(404, "not_found", "Not found.")


@api.exception_handler(RequestDataTooBig)
def _too_big(request: HttpRequest, exc: RequestDataTooBig) -> HttpResponse:
    from django.conf import settings

    return error_response(
        413, "too_large", f"Request body exceeds {settings.DATA_UPLOAD_MAX_MEMORY_SIZE} bytes."
    )


@api.exception_handler(DatabaseError)
def _database_error(request: HttpRequest, exc: DatabaseError) -> HttpResponse:
    # Classified by SQLite result code (tenancy.faults), never by message text.
    logger.exception("database error")
    if faults.classify(exc) is not None:
        response = error_response(
            503, "database_unavailable", "The database hit an I/O or integrity fault; retry later."
        )
    elif faults.is_busy(exc) or faults.descriptors_exhausted(exc):
        response = error_response(503, "unavailable", "The database is busy or unreachable; retry.")
    else:
        return error_response(500, "internal_error", "Internal error (logged).")
    response["Retry-After"] = "1"
    return response


@api.exception_handler(Exception)
def _internal(request: HttpRequest, exc: Exception) -> HttpResponse:
    if faults.descriptors_exhausted(exc):  # EMFILE: this request fails, the worker lives on
        logger.error("out of file descriptors: %s", exc)
        return error_response(503, "unavailable", "The server is out of file descriptors; retry.")
    logger.exception("unhandled error")
    return error_response(500, "internal_error", "Internal error (logged).")


from audit.api import router as audit_router  # noqa: E402
from kv.api import router as kv_router  # noqa: E402
from memory.api import router as memory_router  # noqa: E402
from runs.api import router as runs_router  # noqa: E402  (handlers first)
from tools.api import router as tools_router  # noqa: E402

api.add_router("/v1/", memory_router)
api.add_router("/v1/", runs_router)
api.add_router("/v1/", audit_router)
api.add_router("/v1/", tools_router)
api.add_router("/v1/", kv_router)
