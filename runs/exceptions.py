"""Errors of agent runs."""

from typing import Any

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


class AfterCommitFailed(Exception):
    """The write committed, but the `after` hook given with it (`writer.write`) failed: the
    hook's error is the `__cause__`; `result` is what the write returned."""

    def __init__(self, result: Any) -> None:
        super().__init__("the write committed; its after-commit hook failed")
        self.result = result
