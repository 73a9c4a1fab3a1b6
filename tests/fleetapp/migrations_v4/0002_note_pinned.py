# Keeps v2's second migration unchanged.
from importlib import import_module

Migration = import_module("tests.fleetapp.migrations_v2.0002_note_pinned").Migration
