"""Errors of archives, artifacts, verification and exports."""

from project.exceptions import Conflict, InvalidInput, Unavailable


class RunNotFinished(Conflict):
    code = "run_not_finished"


class NotArchived(Conflict):
    code = "not_archived"


class ArchiveFailed(Unavailable):
    code = "archive_failed"


class ForkOutOfRange(InvalidInput):
    code = "invalid"
