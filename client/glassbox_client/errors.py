"""What the client raises. Every error is a `GlassboxError` with a one-line
message, the HTTP status, the server's `detail` and `code` when there was an
answer, and the exit code the `glassbox` command ends with."""

from __future__ import annotations


class GlassboxError(Exception):
    """Base class. `status`, `detail` and `code` are None when no answer came."""

    exit_code = 1

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        detail: str | None = None,
        code: str | None = None,
        body: object = None,
        url: str | None = None,
    ):
        super().__init__(message)
        self.message = message
        self.status = status
        self.detail = detail
        self.code = code
        self.body = body
        self.url = url

    def __str__(self) -> str:
        return self.message


class LocalInputError(GlassboxError):
    """Something on this machine is wrong before anything is sent: a missing
    file, no configuration, a config file others can read."""

    exit_code = 2


class ConfigError(LocalInputError):
    pass


# --- no usable answer from the server ------------------------------------------------


class ConnectionProblem(GlassboxError):
    """The server could not be asked: down, too slow, or something else answered."""

    exit_code = 7


class ServerUnreachable(ConnectionProblem):
    pass


class ServerTimeout(ConnectionProblem):
    pass


class UnexpectedAnswer(ConnectionProblem):
    """An answer that is not the API's JSON: a proxy's error page, another service."""


# --- the server answered with an error ----------------------------------------------


class ApiError(GlassboxError):
    """A JSON error answer of the Glassbox API (4xx or 5xx)."""


class BadRequest(ApiError):
    pass


class Unauthorized(ApiError):
    exit_code = 3


class Forbidden(ApiError):
    exit_code = 3


class NotFound(ApiError):
    exit_code = 4


class Conflict(ApiError):
    pass


class TooLarge(ApiError):
    pass


class RateLimited(ApiError):
    pass


class ServerError(ApiError):
    pass


_BY_STATUS = {400: BadRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 409: Conflict, 413: TooLarge}


def api_error_class(status: int) -> type[ApiError]:
    if status in _BY_STATUS:
        return _BY_STATUS[status]
    if status == 429:
        return RateLimited
    if status >= 500:
        return ServerError
    return ApiError


# --- outcomes a pipeline branches on --------------------------------------------------


class PendingReview(GlassboxError):
    """The version is still waiting for reviewers."""

    exit_code = 5


class ReportFailed(GlassboxError):
    """An explanation report ended failed or cancelled; `report` is the last state."""

    exit_code = 6

    def __init__(self, message: str, *, report=None, **kwargs):
        super().__init__(message, **kwargs)
        self.report = report


class VersionRejected(GlassboxError):
    exit_code = 8


class RolloutAborted(GlassboxError):
    exit_code = 9

    def __init__(self, message: str, *, rollout=None, **kwargs):
        super().__init__(message, **kwargs)
        self.rollout = rollout


class WaitTimeout(GlassboxError):
    """Gave up waiting (the job itself goes on on the server)."""

    exit_code = 10
