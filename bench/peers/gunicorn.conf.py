"""gunicorn for the peers: sync workers (django-tenants' documented setup), no access log."""

import os

bind = f"127.0.0.1:{os.environ['PORT']}"
workers = int(os.environ.get("PEER_WORKERS", "4"))
worker_class = "sync"
timeout = 60
accesslog = None
loglevel = "warning"
# gunicorn >= 27 opens a control socket at one fixed path per user; several servers run here.
control_socket_disable = True
