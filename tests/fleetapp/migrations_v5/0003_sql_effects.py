# Keeps v4's third migration unchanged.
from importlib import import_module

Migration = import_module("tests.fleetapp.migrations_v4.0003_sql_effects").Migration
