"""Bench settings: the fleet-test app (a real pending migration) plus one static database.

The static database is the baseline of `routed_overhead_ratio`: an ordinary Django alias that
`bench.routers.StaticRouter` sends tenant-scoped models to while it is enabled.
"""

import os

from tests.fleetapp.settings import *  # noqa: F403
from tests.fleetapp.settings import DATABASE_ROUTERS, DATABASES, SQLITE_OPTIONS

STATIC_DB = os.environ.get("BENCH_STATIC_DB", "/tmp/bench-static.sqlite3")
DATABASES = {
    **DATABASES,
    "static": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": STATIC_DB,
        "OPTIONS": dict(SQLITE_OPTIONS),
        "CONN_MAX_AGE": None,
    },
}
DATABASE_ROUTERS = ["bench.routers.StaticRouter", *DATABASE_ROUTERS]
