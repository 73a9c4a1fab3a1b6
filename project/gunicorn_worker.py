"""gunicorn's threaded worker: its own errors in the API's JSON shape, and no worker lost to
running out of file descriptors.

JSON errors (decision 0022): gunicorn refuses some requests before Django sees them: a request
line longer than `limit_request_line` (414), too many or too large headers (431), a malformed
request line, header or chunk (400). It writes those answers with `gunicorn.util.write_error`,
an HTML page, and has no setting to change that. This worker replaces that one function in its
own process: same status, reason and message, as `{"error": {"code", "message"}}`.

Descriptors (decision 0018): in gunicorn 27's `gthread` worker an EMFILE costs more than one
request:
- `accept()` errors other than EAGAIN/ECONNABORTED escape the main loop: the worker exits and
  drops every connection it holds. Here an EMFILE/ENFILE (or ENOBUFS/ENOMEM) pauses accepting
  for a moment instead: the client waits in the listen backlog (or another worker takes it).
- each new connection waits for its first bytes with a fresh epoll selector (a descriptor); under
  EMFILE that raises and the connection is closed unanswered. Here it waits with `poll()`, which
  needs no descriptor.
Inside a request an EMFILE becomes a 503 (project/api.py, project/middleware.py), and one that
escapes Django (it logs 5xx answers with a codec imported lazily, that is, a file opened) becomes
a 503 here.
"""

import errno
import json
import select
import time
from functools import partial
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


ACCEPT_PAUSE_S = 0.05
_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


def _wait_for_data(conn: Any, timeout: float) -> bool:
    """`TConn.wait_for_data` without a descriptor: True once the socket is readable."""
    if conn.data_ready:
        return True
    poller = select.poll()
    try:
        poller.register(conn.sock, select.POLLIN)
        if poller.poll(timeout * 1000):
            conn.data_ready = True
            return True
    except (OSError, ValueError):
        pass  # the socket is closed: the caller defers it, the poller then drops it
    return False


UNAVAILABLE = (
    b'{"error": {"code": "unavailable", "message": "The server is out of file descriptors; '
    b'retry."}}'
)


def _guarded(app: Any) -> Any:
    def wsgi(environ: dict[str, Any], start_response: Any) -> Any:
        try:
            return app(environ, start_response)
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise
            start_response(
                "503 Service Unavailable",
                [("Content-Type", "application/json"), ("Retry-After", "1")],
            )
            return [UNAVAILABLE]

    return wsgi


class ApiThreadWorker(ThreadWorker):  # type: ignore[misc]
    _accept_paused_until = 0.0

    def init_process(self) -> None:
        util.write_error = write_json_error
        super().init_process()

    def load_wsgi(self) -> None:
        super().load_wsgi()
        "".encode("unicode_escape")  # Django's 5xx logging imports this codec: do it now
        self.wsgi = _guarded(self.wsgi)  # type: ignore[has-type]

    def handle(self, conn: Any) -> Any:
        conn.wait_for_data = partial(_wait_for_data, conn)
        return super().handle(conn)

    def accept(self, listener: Any) -> None:
        try:
            super().accept(listener)
        except OSError as exc:
            if exc.errno not in _RESOURCE_ERRNOS:
                raise
            self.log.warning("accept() failed (%s); pausing accepts briefly", exc.strerror)
            self._accept_paused_until = time.monotonic() + ACCEPT_PAUSE_S
            self.set_accept_enabled(False)

    def set_accept_enabled(self, enabled: bool) -> None:
        if enabled and time.monotonic() < self._accept_paused_until:
            return  # the main loop asks again at its next turn (at most 1 s, or on any event)
        super().set_accept_enabled(enabled)
