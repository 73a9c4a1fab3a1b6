"""Errors of tools: refusing a call (422 in the API) and a tool's own failures (recorded on the
call as `{"code", "message"}`)."""

from project.exceptions import ApplicationError, InvalidInput


class UnknownTool(InvalidInput):
    code = "unknown_tool"


class InvalidArgs(InvalidInput):
    code = "invalid_args"


class ToolError(ApplicationError):
    """A tool failed; the call is recorded `failed` with this code and message."""

    code = "tool_error"


class RetryableToolError(ToolError):
    """A transient failure: the call is retried with backoff, up to the tool's `max_retries`."""

    code = "retryable"


class ToolTimeout(ToolError):
    code = "timeout"


class ToolCancelled(ToolError):
    code = "cancelled"


class SqlNotAllowed(ToolError):
    """`sql.query` refused the statement: only one read-only SELECT is allowed."""

    code = "sql_not_allowed"
