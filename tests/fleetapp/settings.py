"""Settings for fleet-migration tests and the bench: the project plus `fleetapp`.

FLEET_STAGE=v1 deploys code whose fleetapp has one migration; v2 adds a second one (a column
and an index, which rebuilds the table), i.e. a real pending migration for every tenant
database made under v1. Later stages build on v2: v3 adds a RunPython data migration; v4 SQL
effects a first-word filter would miss (CTE UPDATE, list-form RunSQL with comments,
`PRAGMA user_version`, a trigger); v5 is v4 plus a table rebuild that re-creates the trigger;
v6 a unique index. `ROOT_URLCONF` adds `/api/v1/fleet/notes`, an ORM read of every column.
"""

import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.fleetapp.apps.FleetAppConfig"]
MIGRATION_MODULES = {"fleetapp": f"tests.fleetapp.migrations_{os.environ.get('FLEET_STAGE', 'v2')}"}
ROOT_URLCONF = "tests.fleetapp.urls"
