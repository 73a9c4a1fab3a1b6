"""gunicorn settings; every value can be overridden from the environment."""

import os

bind = f"{os.environ.get('HOST', '127.0.0.1')}:{os.environ.get('PORT', '8000')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gthread, with gunicorn's own 400/414/431 answers in the API's JSON shape (decision 0022), and
# an EMFILE on accept() pausing accepts instead of ending the worker (decision 0018).
worker_class = "project.gunicorn_worker.ApiThreadWorker"
threads = int(os.environ.get("WEB_THREADS", "8"))
# Request line (method, path, query) and header limits: beyond them gunicorn answers 414 / 431.
limit_request_line = int(os.environ.get("API_MAX_REQUEST_LINE", "4094"))
limit_request_field_size = 8190
# Each worker listens on its own SO_REUSEPORT socket, so the kernel spreads new connections
# evenly over the workers. On one shared socket the workers race to accept, and one of them can
# take every connection of a burst (wrk's 16 at once, a client's pool) and keep them all
# alive, serving with one GIL while the other idles: c=16 swung between ~340 and ~590 req/s from
# one round to the next with the split (decision 0045).
reuse_port = os.environ.get("GUNICORN_REUSE_PORT", "1") != "0"
graceful_timeout = 10
timeout = 30
accesslog = os.environ.get("ACCESS_LOG", "-") or None
# gunicorn >= 27 opens a control socket at one fixed path per user, which two instances side by
# side would fight over; nothing here uses it.
control_socket_disable = True

# Descriptor budget (decision 0018): lift the soft limit to the hard one (capped), then give a
# quarter of it to client sockets (`worker_connections`); tenancy.connections keeps its open
# databases (4 descriptors each) within what is left after that and a fixed reserve.
_soft = 1024
try:
    import resource

    _soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    _want = 65536 if _hard == resource.RLIM_INFINITY else min(_hard, 65536)
    if _soft < _want:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_want, _hard))
        _soft = _want
except (ImportError, ValueError, OSError):
    pass
worker_connections = max(threads * 2, min(1000, _soft // 4))

# Garbage collection in a worker (decision 0055): what the worker imported and built at start-up
# is frozen out of every later collection, and young objects are collected less often. A full
# collection scanned the whole Django heap (~100 ms, all of the worker's threads stopped) a few
# times a minute under load; p99 at c=16 fell by about a fifth and the worst request by a half.
# `WEB_GC_THRESHOLD=""` keeps Python's defaults (and skips the freeze).
_gc_raw = os.environ.get("WEB_GC_THRESHOLD", "50000,20,100")
try:
    _gc_threshold = tuple(int(n) for n in _gc_raw.split(",")) if _gc_raw.strip() else ()
    if len(_gc_threshold) > 3 or not all(0 < n < 2**31 for n in _gc_threshold):
        raise ValueError
except ValueError:
    raise SystemExit(
        "WEB_GC_THRESHOLD must be one to three positive integers such as 50000,20,100 (or empty "
        f"for Python's defaults), not {_gc_raw!r}"
    ) from None


def post_worker_init(worker: object) -> None:
    if _gc_threshold:
        import gc

        from django.urls import get_resolver

        # The URLconf (the API, its schemas, the services behind them) loads on the first
        # request otherwise: load it now, so that it is frozen with the rest.
        get_resolver().url_patterns  # noqa: B018
        gc.freeze()  # start-up objects live as long as the worker: never scan them again
        gc.set_threshold(*_gc_threshold)
