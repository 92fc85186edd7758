"""API errors: an HTTP status plus a one-line message, rendered as ``{"detail": "..."}``."""

from __future__ import annotations


class ApiError(Exception):
    """A refusal answered with ``status`` and ``{"detail": detail}`` (plus HEADERS) by the
    app's exception handler, wherever a request raises it.
    """

    status = 400

    def __init__(self, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.headers = headers


class BadRequest(ApiError):
    status = 400


class Unauthorized(ApiError):
    status = 401

    def __init__(self, detail: str) -> None:
        super().__init__(detail, {"WWW-Authenticate": "Bearer"})


class Forbidden(ApiError):
    status = 403


class NotFound(ApiError):
    status = 404


class Conflict(ApiError):
    status = 409


class Gone(ApiError):
    status = 410


class TooLarge(ApiError):
    status = 413


class Unavailable(ApiError):
    status = 503


class InsufficientStorage(ApiError):
    """The disk (or quota) under the blob store or the database is full."""

    status = 507


class TooManyRequests(ApiError):
    """429, with RETRY_AFTER (whole seconds) sent as Retry-After."""

    status = 429

    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(detail, {"Retry-After": str(retry_after)})
