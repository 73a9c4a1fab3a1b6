"""gunicorn settings; every value can be overridden from the environment."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread, with gunicorn's own 400/414/431 answers in the API's JSON shape (decision 0022).
worker_class = "project.gunicorn_worker.JsonErrorsThreadWorker"
threads = int(os.environ.get("WEB_THREADS", "8"))
# Request line (method, path, query) and header limits: beyond them gunicorn answers 414 / 431.
limit_request_line = int(os.environ.get("API_MAX_REQUEST_LINE", "4094"))
limit_request_field_size = 8190
graceful_timeout = 10
timeout = 30
accesslog = os.environ.get("ACCESS_LOG", "-") or None
# gunicorn >= 27 opens a control socket at one fixed path per user, which two instances side by
# side would fight over; nothing here uses it.
control_socket_disable = True

# Each open WAL connection holds 3 descriptors and every thread keeps up to
# TENANCY_CONNECTIONS_PER_THREAD of them: lift the soft limit to the hard one (capped).
try:
    import resource

    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    _want = 65536 if _hard == resource.RLIM_INFINITY else min(_hard, 65536)
    if _soft < _want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_want, _hard))
except (ImportError, ValueError, OSError):
    pass
