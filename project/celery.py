"""The Celery app: without REDIS_URL tasks run inline (embedded mode), with it Redis brokers.

Periodic tasks (`CELERY_BEAT_SCHEDULE` in settings) run under Celery beat (`make beat`); in
embedded mode cron runs the equivalent commands (`manage.py expire_runs`).
"""

import os
from collections.abc import Iterator, Mapping
from functools import cached_property
from typing import Any

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "project.settings")


class DjangoCelerySettings(Mapping[str, Any]):
    """The `CELERY_*` Django settings (and TIME_ZONE), read once, when Celery first reads its
    configuration.

    What `config_from_object("django.conf:settings", namespace="CELERY")` reads, as a dict:
    Celery looks up a dozen options per published task, each in several spellings, and every
    miss on Django's settings object raised and caught an AttributeError (~35 us of the ~250 us
    a publish costs). Celery options changed later go through `app.conf`, as before.
    """

    @cached_property
    def _values(self) -> dict[str, Any]:
        from django.conf import settings

        # TIME_ZONE: Celery falls back to Django's when CELERY_TIMEZONE is not set.
        return {
            name: getattr(settings, name)
            for name in dir(settings)
            if name.startswith("CELERY_") or name == "TIME_ZONE"
        }

    def __getitem__(self, key: str) -> Any:
        return self._values[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._values)

    def __len__(self) -> int:
        return len(self._values)


app = Celery("agentdb")
app.config_from_object(DjangoCelerySettings(), namespace="CELERY")
app.autodiscover_tasks()
