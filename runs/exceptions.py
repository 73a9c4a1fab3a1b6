"""Errors of agent runs."""

from project.exceptions import Conflict


class RunClosed(Conflict):
    code = "run_closed"


class StaleVersion(Conflict):
    code = "stale_version"
