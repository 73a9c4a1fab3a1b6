"""Settings for bench/http.py: the project, plus the "one big database" baseline when
BENCH_SHARED_RUNS_DB names a file (every run's rows then go to that one SQLite database)."""

import os

from project.settings import *  # noqa: F403
from project.settings import DATABASE_ROUTERS, DATABASES, SQLITE_OPTIONS

SHARED_RUNS_DB = os.environ.get("BENCH_SHARED_RUNS_DB", "")
if SHARED_RUNS_DB:
    DATABASES = {
        **DATABASES,
        "shared": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": SHARED_RUNS_DB,
            "OPTIONS": dict(SQLITE_OPTIONS),
            "CONN_MAX_AGE": None,
        },
    }
    DATABASE_ROUTERS = ["bench.routers.SharedRunsRouter", *DATABASE_ROUTERS]
