"""What the sync and async clients share: request specs, the retry policy, answers.

Retries are safe by construction: every POST carries an ``Idempotency-Key``
(a uuid4 unless the caller gave one) and the SAME key is sent on each of the
SDK's own attempts, so the server runs the request at most once and replays
its stored answer to the others. GET and PUT are idempotent by themselves.

Retried: connection errors and timeouts, 429 (after ``Retry-After``),
502/503/504, and 409 ``idempotency_request_in_progress`` (the first attempt
is still running on the server). Never retried: any other 4xx, and 500.
"""

from __future__ import annotations

import email.utils
import json
import random
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from micropay.client.errors import APIConnectionError, MicropayError, error_class

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
IN_PROGRESS = "idempotency_request_in_progress"
RETRY_STATUSES = frozenset({429, 502, 503, 504})
# Transport failures worth another attempt (not e.g. UnsupportedProtocol: a bad URL).
RETRY_EXCEPTIONS: tuple[type[Exception], ...] = (
    httpx.TimeoutException,
    httpx.NetworkError,
    httpx.RemoteProtocolError,
)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Bounded attempts with jittered exponential back-off.

    Attempt ``n`` (0-based) waits ``uniform(d/2, d)`` with ``d = min(max_delay_s,
    base_delay_s * 2**n)``, or the server's ``Retry-After`` on a 429 (refused
    outright when it asks for more than ``max_retry_after_s``).
    """

    max_attempts: int = 4
    base_delay_s: float = 0.25
    max_delay_s: float = 8.0
    max_retry_after_s: float = 60.0

    def backoff_s(self, attempt: int, rng: random.Random) -> float:
        ceiling = min(self.max_delay_s, self.base_delay_s * (2**attempt))
        return rng.uniform(ceiling / 2, ceiling)


NO_RETRIES = RetryPolicy(max_attempts=1)


@dataclass(frozen=True, slots=True)
class Call:
    """One API request, before sending: the same for both clients."""

    method: str
    path: str
    params: dict[str, Any] | None = None
    body: Any = None
    idempotency_key: str | None = None
    headers: dict[str, str] = field(default_factory=dict)

    def request_headers(self, api_key: str | None) -> dict[str, str]:
        sent = {"Accept": "application/json", **self.headers}
        if api_key:
            sent["Authorization"] = f"Bearer {api_key}"
        if self.idempotency_key is not None:
            sent["Idempotency-Key"] = self.idempotency_key
        if self.body is not None:
            sent["Content-Type"] = "application/json"
        return sent

    def content(self) -> bytes | None:
        if self.body is None:
            return None
        return json.dumps(self.body, separators=(",", ":")).encode()


def post(path: str, body: Any, idempotency_key: str | None) -> Call:
    """A POST, with a fresh uuid4 idempotency key unless the caller brought one."""
    return Call("POST", path, body=body, idempotency_key=idempotency_key or str(uuid.uuid4()))


@dataclass(frozen=True, slots=True)
class Answer:
    status: int
    body: Any
    replayed: bool
    request_id: str | None


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now())


def to_error(response: httpx.Response) -> MicropayError:
    request_id = response.headers.get("request-id")
    code, message = f"http_{response.status_code}", response.reason_phrase or "error"
    try:
        problem = response.json().get("error") or {}
        code = str(problem.get("code") or code)
        message = str(problem.get("message") or message)
        request_id = str(problem.get("request_id") or request_id or "") or None
    except (ValueError, AttributeError):
        pass
    return error_class(response.status_code)(
        code,
        message,
        status=response.status_code,
        request_id=request_id,
        retry_after_s=parse_retry_after(response.headers.get("retry-after")),
    )


def answer(response: httpx.Response) -> Answer:
    if response.status_code >= 400:
        raise to_error(response)
    try:
        body = response.json() if response.content else None
    except ValueError:
        raise MicropayError(
            "invalid_response",
            "the server's answer is not JSON",
            status=response.status_code,
            request_id=response.headers.get("request-id"),
        ) from None
    return Answer(
        response.status_code,
        body,
        response.headers.get("idempotent-replayed") == "true",
        response.headers.get("request-id"),
    )


def retry_delay(
    policy: RetryPolicy,
    attempt: int,
    rng: random.Random,
    *,
    response: httpx.Response | None = None,
    error: Exception | None = None,
) -> float | None:
    """Seconds to wait before attempt ``attempt + 1``, or None: do not retry."""
    if attempt + 1 >= policy.max_attempts:
        return None
    if error is not None:
        return policy.backoff_s(attempt, rng) if isinstance(error, RETRY_EXCEPTIONS) else None
    assert response is not None
    status = response.status_code
    if status == 429:
        asked = parse_retry_after(response.headers.get("retry-after"))
        if asked is None:
            return policy.backoff_s(attempt, rng)
        return asked if asked <= policy.max_retry_after_s else None
    if status in RETRY_STATUSES:
        return policy.backoff_s(attempt, rng)
    if status == 409 and _code(response) == IN_PROGRESS:
        return policy.backoff_s(attempt, rng)
    return None


def _code(response: httpx.Response) -> str | None:
    try:
        return str(response.json()["error"]["code"])
    except (ValueError, KeyError, TypeError):
        return None


def connection_error(error: Exception, attempts: int) -> APIConnectionError:
    return APIConnectionError(
        "connection_error",
        f"no answer after {attempts} attempt(s): {type(error).__name__}",
    )


def masked(api_key: str | None) -> str:
    """An API key as shown in repr and logs: its public prefix only."""
    if not api_key:
        return "None"
    prefix = "_".join(api_key.split("_")[:3])  # mp_sk_test
    return f"{prefix}_…"
