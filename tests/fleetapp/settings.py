"""Settings for fleet-migration tests and the bench: the project plus `fleetapp`.

FLEET_STAGE=v1 deploys code whose fleetapp has one migration; v2 adds a second one (a column
and an index), i.e. a real pending migration for every tenant database made under v1.
"""

import os

from project.settings import *  # noqa: F403
from project.settings import INSTALLED_APPS

INSTALLED_APPS = [*INSTALLED_APPS, "tests.fleetapp.apps.FleetAppConfig"]
MIGRATION_MODULES = {"fleetapp": f"tests.fleetapp.migrations_{os.environ.get('FLEET_STAGE', 'v2')}"}
