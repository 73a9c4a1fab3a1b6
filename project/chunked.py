"""Request bodies sent with `Transfer-Encoding: chunked`, for Django.

gunicorn decodes the chunks and hands the application a `wsgi.input` with no `CONTENT_LENGTH`
(and sets `wsgi.input_terminated`); Django reads `CONTENT_LENGTH` only, so it would see an empty
body. This WSGI wrapper reads such a body up to one byte past `DATA_UPLOAD_MAX_MEMORY_SIZE`
(`API_MAX_BODY_BYTES`) and gives Django a sized copy. A longer body keeps that extra byte, so
Django's own check answers 413 exactly as it does for a declared `Content-Length`; memory per
request stays bounded by the limit.
"""

import io
from collections.abc import Callable, Iterable
from typing import Any

from django.conf import settings

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class ChunkedBodies:
    def __init__(self, app: WSGIApp):
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        if _is_chunked(environ) and not environ.get("CONTENT_LENGTH"):
            limit = settings.DATA_UPLOAD_MAX_MEMORY_SIZE or 0
            body = environ["wsgi.input"].read(limit + 1)
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def _is_chunked(environ: dict[str, Any]) -> bool:
    codings = environ.get("HTTP_TRANSFER_ENCODING", "").lower().split(",")
    return "chunked" in (coding.strip() for coding in codings)
