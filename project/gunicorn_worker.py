"""gunicorn's threaded worker, answering its own errors in the API's JSON shape.

gunicorn refuses some requests before Django sees them: a request line longer than
`limit_request_line` (414), too many or too large headers (431), a malformed request line,
header or chunk (400). It writes those answers with `gunicorn.util.write_error`, an HTML page,
and has no setting to change that. This worker replaces that one function in its own process
(decision 0022): same status, reason and message, as `{"error": {"code", "message"}}`.
"""

import json
from typing import Any

from gunicorn import util
from gunicorn.workers.gthread import ThreadWorker

from project.middleware import error_code


def write_json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Write gunicorn's error answer as JSON (the signature of `gunicorn.util.write_error`)."""
    message = mesg or f"{reason}."
    body = json.dumps({"error": {"code": error_code(status_int), "message": message}}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\n"
        "Connection: close\r\n"
        "Content-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode("latin-1")
    util.write_nonblock(sock, head + body)


class JsonErrorsThreadWorker(ThreadWorker):
    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()
