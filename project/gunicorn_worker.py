"""gunicorn's threaded worker, made to survive running out of file descriptors.

gunicorn's `gthread` worker re-raises any `accept()` error other than EAGAIN/ECONNABORTED from its
main loop, so one EMFILE ends the worker and drops every connection it holds (gunicorn 27). Here
an EMFILE/ENFILE (or ENOBUFS/ENOMEM) on accept pauses accepting for a moment instead: the client
waits in the listen backlog (or another worker takes it) until a request finishes and frees
descriptors. Inside a request, an EMFILE becomes a 503 (project/api.py, project/middleware.py).
"""

import errno
import time
from typing import Any

from gunicorn.workers.gthread import ThreadWorker

ACCEPT_PAUSE_S = 0.05
_RESOURCE_ERRNOS = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class DescriptorSafeThreadWorker(ThreadWorker):  # type: ignore[misc]
    _accept_paused_until = 0.0

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
