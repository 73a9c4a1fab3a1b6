"""Errors of agent runs."""

from project.exceptions import Conflict, Unavailable


class RunClosed(Conflict):
    code = "run_closed"


class StaleVersion(Conflict):
    code = "stale_version"


class RunBusy(Unavailable):
    """The run's writer did not take this write within `RUN_WRITE_WAIT_S`; nothing was written."""

    code = "run_busy"


class LeaseLost(Unavailable):
    """This process's lease on the run expired before it committed (fenced off); nothing was
    written. A retry takes a fresh lease."""

    code = "lease_lost"
