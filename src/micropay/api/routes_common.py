"""What the endpoints outside :mod:`micropay.api.routes` share with it.

The same dependencies (key kinds), the same idempotent replay of POST answers,
the same error responses in the OpenAPI description, and the ownership checks
every query starts with: another merchant's object answers 404.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any, cast

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel

from micropay.api import schemas as s
from micropay.api.errors import ApiError
from micropay.api.runtime import Principal, Runtime, api_tx
from micropay.payments.models import Customer, PurchaseStatus, idempotency_key_chars_max

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": s.ErrorEnvelope, "description": "refused"}
    for code in (400, 401, 402, 403, 404, 409, 413, 422, 429)
}
int64_max = 2**63 - 1


def dump(model: BaseModel) -> bytes:
    """An answer's body: the response schema as JSON bytes (stored as is for replays)."""
    return model.model_dump_json().encode()


def response(status: int, body: bytes, replayed: bool = False) -> Response:
    headers = {"Idempotent-Replayed": "true"} if replayed else None
    return Response(body, status_code=status, media_type="application/json", headers=headers)


def fingerprint(path: str, body: BaseModel | None) -> str:
    """What an Idempotency-Key is bound to: the path and the parsed body."""
    text = json.dumps([path, body.model_dump(mode="json") if body else None], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


__all__ = [
    "ERRORS",
    "domain_key",
    "dump",
    "execute",
    "fingerprint",
    "idempotent",
    "numeric_id",
    "own_customer",
    "query",
    "response",
]


def idempotent(
    rt: Runtime,
    p: Principal,
    key: str,
    request: Request,
    body: BaseModel | None,
    handler: Callable[[], tuple[int, bytes]],
    *,
    replay_body: Callable[[], bytes] | None = None,
) -> Response:
    """Run a POST once per (key owner, Idempotency-Key); a replay answers the same bytes.

    ``replay_body`` is the body kept for replays when the first answer shows a
    secret once (a new webhook signing secret): the replay shows it as null.
    """
    request_id = str(getattr(request.state, "request_id", ""))
    bound_to = fingerprint(request.url.path, body)

    def run() -> tuple[int, bytes, bytes]:
        status, out = handler()
        return status, out, replay_body() if replay_body else out

    status, out, replayed = rt.idempotent(p, key, bound_to, run, request_id)
    return response(status, out, replayed)


def own_customer(tx: Any, p: Principal, public_id: str) -> Customer:
    """The key's merchant's customer, else 404 ``customer_not_found``."""
    found = tx.find_api_customer(public_id)
    if found is None or found[1] != p.merchant_id:
        raise ApiError.from_status(PurchaseStatus.customer_not_found)
    return cast(Customer, found[0])


def query(tx: Any, statement: str, params: Sequence[object]) -> list[Any]:
    """Rows of one SQL statement in ``tx`` (``?`` placeholders, rewritten per database)."""
    return api_tx(tx)._api_all(statement, params)


def execute(tx: Any, statement: str, params: Sequence[object]) -> None:
    """Run one SQL statement that returns no rows (``?`` placeholders) in ``tx``."""
    sql = api_tx(tx)
    sql._cur.execute(sql._sql(statement), params)
    tx.forget_rows()  # it may have changed rows the transaction remembers


def domain_key(key: str) -> str:
    """The service's idempotency key for an Idempotency-Key header (at most 255 characters)."""
    if len(key) <= idempotency_key_chars_max - 4:
        return f"api:{key}"
    return f"api#{hashlib.sha256(key.encode()).hexdigest()}"


def numeric_id(public_id: str, prefix: str) -> int:
    """The internal id of ``<prefix><digits>`` (the path pattern has checked the shape).

    A number past the 64-bit ids names nothing: 404, never a database error.
    """
    value = int(public_id.removeprefix(prefix))
    if value > int64_max:
        raise ApiError("not_found", "not found")
    return value
