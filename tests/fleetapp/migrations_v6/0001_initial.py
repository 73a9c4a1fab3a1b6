# Keeps v1's first migration unchanged.
from importlib import import_module

Migration = import_module("tests.fleetapp.migrations_v1.0001_initial").Migration
