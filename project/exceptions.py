"""The base of every error the API renders, and the generic kinds each app subclasses."""


class ApplicationError(Exception):
    """Base of every error the API renders as `{"error": {"code", "message"}}`."""

    status = 400
    code = "bad_request"
    headers: dict[str, str] = {}  # extra HTTP headers of the response
    retry_after: int | None = None  # seconds: sent as `Retry-After` (503, 429)

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        retry_after: int | None = None,
        **extra: object,
    ):
        super().__init__(message)
        self.message = message
        self.extra = extra  # rendered beside code and message, e.g. current_version
        if code is not None:
            self.code = code
        if status is not None:
            self.status = status
        if retry_after is not None:
            self.retry_after = retry_after
        if self.retry_after is not None:
            self.headers = {**self.headers, "Retry-After": str(self.retry_after)}


class BadRequest(ApplicationError):
    """Bytes that are not a request this API can read: unparsable JSON, a malformed header."""

    status = 400
    code = "bad_request"


class NotFound(ApplicationError):
    status = 404
    code = "not_found"


class Conflict(ApplicationError):
    status = 409
    code = "conflict"


class InvalidInput(ApplicationError):
    status = 422
    code = "invalid"


class TooLarge(ApplicationError):
    status = 413
    code = "too_large"


class TooManyRequests(ApplicationError):
    status = 429
    code = "limit_reached"


class Unavailable(ApplicationError):
    """Retryable: the request made no change; try again after `Retry-After` seconds."""

    status = 503
    code = "unavailable"
    retry_after = 1


class DependencyUnavailable(Unavailable):
    code = "dependency_unavailable"
