"""SQL of the HTTP API: merchant modes, API keys, customer ownership, idempotent responses.

A mixin for the adapters' transaction classes (like :class:`PaymentsSql`): it
uses their cursor (``self._cur``) and placeholder rewriting (``self._sql``).
Until it is mixed into ``PaymentsSql``, :func:`micropay.api.runtime.api_tx`
binds it to a transaction's cursor.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from micropay.store.sql import Cursor

_PURCHASE_COLUMNS = (
    "id, merchant_id, customer_id, item_ref, price_micros, currency, funding, status,"
    " transfer_id, charge_id, idempotency_key, request_hash, refunded_micros, created_at_us"
)


@dataclass(frozen=True, slots=True)
class ApiKeyRow:
    lookup: str
    secret_sha256: str
    kind: str  # secret | publishable | operator
    mode: str  # test | live
    merchant_id: int | None
    created_at_us: int
    revoked_at_us: int | None


@dataclass(frozen=True, slots=True)
class IdempotencyRow:
    fingerprint: str
    state: str  # in_progress | done
    status_code: int
    body: bytes
    created_at_us: int


def _key(r: Sequence[Any]) -> ApiKeyRow:
    return ApiKeyRow(r[0], r[1], r[2], r[3], r[4], r[5], r[6])


class ApiSql:
    _cur: Cursor

    def _sql(self, text: str) -> str:
        return text

    def _api_all(self, statement: str, params: Sequence[object]) -> list[Any]:
        self._cur.execute(self._sql(statement), params)
        return self._cur.fetchall()

    # --- merchants' modes ------------------------------------------------

    def insert_api_merchant(self, merchant_id: int, mode: str, now_us: int) -> None:
        self._cur.execute(
            self._sql(
                "INSERT INTO api_merchants (merchant_id, mode, created_at_us) VALUES (?,?,?)"
            ),
            (merchant_id, mode, now_us),
        )

    def api_merchant_mode(self, merchant_id: int) -> str | None:
        rows = self._api_all("SELECT mode FROM api_merchants WHERE merchant_id = ?", (merchant_id,))
        return str(rows[0][0]) if rows else None

    # --- keys ----------------------------------------------------------------

    def insert_api_key(self, key: ApiKeyRow) -> None:
        self._cur.execute(
            self._sql(
                "INSERT INTO api_keys (lookup, secret_sha256, kind, mode, merchant_id,"
                " created_at_us, revoked_at_us) VALUES (?,?,?,?,?,?,?)"
            ),
            (
                key.lookup,
                key.secret_sha256,
                key.kind,
                key.mode,
                key.merchant_id,
                key.created_at_us,
                key.revoked_at_us,
            ),
        )

    def get_api_key(self, lookup: str) -> ApiKeyRow | None:
        rows = self._api_all(
            "SELECT lookup, secret_sha256, kind, mode, merchant_id, created_at_us, revoked_at_us"
            " FROM api_keys WHERE lookup = ?",
            (lookup,),
        )
        return _key(rows[0]) if rows else None

    def list_api_keys(self, merchant_id: int | None) -> list[ApiKeyRow]:
        where = "merchant_id IS NULL" if merchant_id is None else "merchant_id = ?"
        rows = self._api_all(
            "SELECT lookup, secret_sha256, kind, mode, merchant_id, created_at_us, revoked_at_us"
            f" FROM api_keys WHERE {where} ORDER BY created_at_us, lookup",
            () if merchant_id is None else (merchant_id,),
        )
        return [_key(r) for r in rows]

    def revoke_api_key(self, lookup: str, now_us: int) -> bool:
        """Revoke once; True if this call revoked it."""
        self._cur.execute(
            self._sql(
                "UPDATE api_keys SET revoked_at_us = ? WHERE lookup = ? AND revoked_at_us IS NULL"
            ),
            (now_us, lookup),
        )
        return self._cur.rowcount == 1

    # --- customers' owners ---------------------------------------------------

    def insert_api_customer(self, customer_id: int, merchant_id: int, now_us: int) -> None:
        self._cur.execute(
            self._sql(
                "INSERT INTO api_customers (customer_id, merchant_id, created_at_us) VALUES (?,?,?)"
            ),
            (customer_id, merchant_id, now_us),
        )

    def api_customer_owner(self, customer_id: int) -> int | None:
        rows = self._api_all(
            "SELECT merchant_id FROM api_customers WHERE customer_id = ?", (customer_id,)
        )
        return int(rows[0][0]) if rows else None

    def list_api_customers(self, merchant_id: int, after_id: int, limit: int) -> list[str]:
        """Public ids of the merchant's customers with internal id above ``after_id``."""
        rows = self._api_all(
            "SELECT c.id, c.public_id FROM api_customers a JOIN customers c ON c.id = a.customer_id"
            " WHERE a.merchant_id = ? AND a.customer_id > ? ORDER BY a.customer_id LIMIT ?",
            (merchant_id, after_id, limit),
        )
        return [str(r[1]) for r in rows]

    def list_purchases(self, merchant_id: int, after_id: int, limit: int) -> list[int]:
        rows = self._api_all(
            "SELECT id FROM purchases WHERE merchant_id = ? AND id > ? ORDER BY id LIMIT ?",
            (merchant_id, after_id, limit),
        )
        return [int(r[0]) for r in rows]

    # --- idempotent responses ------------------------------------------------

    def get_idempotency(self, owner: str, key: str) -> IdempotencyRow | None:
        rows = self._api_all(
            "SELECT fingerprint, state, status_code, body, created_at_us FROM api_idempotency"
            " WHERE owner = ? AND idempotency_key = ?",
            (owner, key),
        )
        if not rows:
            return None
        r = rows[0]
        return IdempotencyRow(r[0], r[1], r[2], bytes(r[3]), r[4])

    def start_idempotency(self, owner: str, key: str, fingerprint: str, now_us: int) -> None:
        self._cur.execute(
            self._sql(
                "INSERT INTO api_idempotency (owner, idempotency_key, fingerprint, state,"
                " status_code, body, created_at_us) VALUES (?,?,?,'in_progress',0,?,?)"
            ),
            (owner, key, fingerprint, b"", now_us),
        )

    def insert_idempotency_done(
        self, owner: str, key: str, fingerprint: str, status_code: int, body: bytes, now_us: int
    ) -> None:
        """Store a finished answer at once (a request that ran inside one transaction)."""
        self._cur.execute(
            self._sql(
                "INSERT INTO api_idempotency (owner, idempotency_key, fingerprint, state,"
                " status_code, body, created_at_us) VALUES (?,?,?,'done',?,?,?)"
            ),
            (owner, key, fingerprint, status_code, body, now_us),
        )

    def restart_idempotency(
        self, owner: str, key: str, fingerprint: str, stale_before_us: int, now_us: int
    ) -> bool:
        """Take over an in-progress row older than ``stale_before_us`` (its request died)."""
        self._cur.execute(
            self._sql(
                "UPDATE api_idempotency SET created_at_us = ?, fingerprint = ?"
                " WHERE owner = ? AND idempotency_key = ? AND state = 'in_progress'"
                " AND created_at_us < ?"
            ),
            (now_us, fingerprint, owner, key, stale_before_us),
        )
        return self._cur.rowcount == 1

    def finish_idempotency(self, owner: str, key: str, status_code: int, body: bytes) -> bool:
        self._cur.execute(
            self._sql(
                "UPDATE api_idempotency SET state = 'done', status_code = ?, body = ?"
                " WHERE owner = ? AND idempotency_key = ? AND state = 'in_progress'"
            ),
            (status_code, body, owner, key),
        )
        return self._cur.rowcount == 1

    def abandon_idempotency(self, owner: str, key: str) -> None:
        """Forget an in-progress request that failed without an answer worth keeping."""
        self._cur.execute(
            self._sql(
                "DELETE FROM api_idempotency WHERE owner = ? AND idempotency_key = ?"
                " AND state = 'in_progress'"
            ),
            (owner, key),
        )
