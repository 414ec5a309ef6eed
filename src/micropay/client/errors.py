"""Errors the SDK raises: one class per kind of refusal, each with the API's envelope.

Every refusal of the API is ``{"error": {"code", "message", "request_id"}}`` with
an HTTP status; :func:`error_from_response` turns it into the matching
:class:`MicropayError` subclass. ``code`` is the API's stable code (branch on
it); ``status`` is the HTTP status (``None`` when no answer arrived).
"""

from __future__ import annotations


class MicropayError(Exception):
    """Base of every error the SDK raises."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        status: int | None = None,
        request_id: str | None = None,
        retry_after_s: float | None = None,
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status
        self.request_id = request_id
        self.retry_after_s = retry_after_s

    def __str__(self) -> str:
        where = f" (HTTP {self.status}" if self.status is not None else " (no answer"
        rid = f", request {self.request_id})" if self.request_id else ")"
        return f"{self.code}: {self.message}{where}{rid}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r})"


class APIConnectionError(MicropayError):
    """No answer: the connection failed or timed out (after the SDK's own retries)."""


class InvalidRequestError(MicropayError):
    """400, 413, 415, 422: the request itself is wrong; retrying it cannot help."""


class AuthenticationError(MicropayError):
    """401: missing, invalid or revoked API key."""


class PermissionDeniedError(MicropayError):
    """403: the key may not do this (scope or mode)."""


class NotFoundError(MicropayError):
    """404: no such object for this key's merchant."""


class PaymentRequiredError(MicropayError):
    """402: the customer cannot pay (insufficient funds, frozen tab, declined card...)."""


class ConflictError(MicropayError):
    """409: idempotency key reused, request still in progress, state conflict."""


class RateLimitError(MicropayError):
    """429: too many requests for this key; ``retry_after_s`` says how long to wait."""


class ServerError(MicropayError):
    """5xx: the server failed (the SDK already retried 502/503/504)."""


_BY_STATUS: dict[int, type[MicropayError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    409: ConflictError,
    413: InvalidRequestError,
    415: InvalidRequestError,
    422: InvalidRequestError,
    429: RateLimitError,
}


def error_class(status: int) -> type[MicropayError]:
    if status >= 500:
        return ServerError
    return _BY_STATUS.get(status, InvalidRequestError if status >= 400 else MicropayError)
