"""The WSGI application: /api/ through a lean middleware stack, everything else through all of it.

The API authenticates with API keys and answers JSON, so sessions, CSRF, users, messages, static
files and frame options do nothing for it but cost time on every request. Two Django handlers
share one process: `API_MIDDLEWARE` (settings) for paths under /api/, `MIDDLEWARE` for the
admin, static files and the rest. The test client splits requests the same way
(tests/conftest.py). Decision 0043.
"""

import os
from typing import Any

from django.conf import settings
from django.core.handlers.base import BaseHandler
from django.core.handlers.wsgi import WSGIHandler
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

from project.chunked import ChunkedBodies
from project.middleware import API_PREFIX


class ApiMiddlewareMixin(BaseHandler):
    """A Django handler whose middleware is `settings.API_MIDDLEWARE`."""

    def load_middleware(self, is_async: bool = False) -> None:
        # Django reads the list from settings.MIDDLEWARE. This runs once per handler, before
        # its first request (at startup for the server), so the swap is seen by no one else.
        full = settings.MIDDLEWARE
        settings.MIDDLEWARE = settings.API_MIDDLEWARE
        try:
            super().load_middleware(is_async)
        finally:
            settings.MIDDLEWARE = full


class ApiHandler(ApiMiddlewareMixin, WSGIHandler):
    pass


def is_api(environ: dict[str, Any]) -> bool:
    return str(environ.get("PATH_INFO", "")).startswith(API_PREFIX)


def by_path(api: Any, site: Any) -> Any:
    def application(environ: dict[str, Any], start_response: Any) -> Any:
        return (api if is_api(environ) else site)(environ, start_response)

    return application


_site = get_wsgi_application()  # sets Django up
application = ChunkedBodies(by_path(ApiHandler(), _site))
