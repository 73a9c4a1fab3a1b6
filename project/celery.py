"""The Celery app: without REDIS_URL tasks run inline (embedded mode), with it Redis brokers.

Periodic tasks (`CELERY_BEAT_SCHEDULE` in settings) run under Celery beat (`make beat`); in
embedded mode cron runs the equivalent commands (`manage.py expire_runs`).
"""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")

app = Celery("agentdb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
