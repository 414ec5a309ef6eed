"""SQL of processor events, disputes and adjustments, shared by the SQLite and PostgreSQL adapters.

A mixin of :class:`micropay.store.payments_sql.PaymentsSql`: it uses the
adapter's cursor (``self._cur``) and placeholder rewriting (``self._sql``).
``processor_events`` and ``adjustments`` are append-only (the database refuses
UPDATE and DELETE); a dispute is closed once, by a guarded UPDATE.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from micropay.service.adjustments import AdjustmentRecord
from micropay.service.processor_events import DisputeRecord, EventRecord
from micropay.store.sql import Cursor

_EVENT_COLUMNS = (
    "processor, event_id, kind, object_id, charge_ref, status, effect, detail, created_s,"
    " received_at_us"
)
_DISPUTE_COLUMNS = (
    "id, processor, processor_dispute_id, charge_id, purpose, currency, amount_micros,"
    " customer_micros, merchant_micros, loss_micros, fee_micros, status, opened_at_us,"
    " closed_at_us"
)
_ADJUSTMENT_COLUMNS = (
    "id, idempotency_key, request_hash, account_id, currency, amount_micros, reason, actor,"
    " transfer_id, created_at_us"
)


def _dispute(r: Sequence[Any]) -> DisputeRecord:
    return DisputeRecord(
        r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10], r[11], r[12], r[13] or 0
    )


class ProcessorEventsSql:
    _cur: Cursor

    def _sql(self, text: str) -> str:
        return text

    def _first(self, statement: str, params: Sequence[object]) -> Any:
        self._cur.execute(self._sql(statement), params)
        rows = self._cur.fetchall()
        return rows[0] if rows else None

    # --- processor events ----------------------------------------------------

    def get_processor_event(self, processor: str, event_id: str) -> EventRecord | None:
        row = self._first(
            f"SELECT {_EVENT_COLUMNS} FROM processor_events WHERE processor = ? AND event_id = ?",
            (processor, event_id),
        )
        return None if row is None else EventRecord(*row)

    def insert_processor_event(self, e: EventRecord) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO processor_events ({_EVENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                e.processor,
                e.event_id,
                e.kind,
                e.object_id,
                e.charge_ref,
                e.status,
                e.effect,
                e.detail,
                e.created_s,
                e.received_at_us,
            ),
        )

    def find_charge_id_by_processor_id(self, processor_charge_id: str) -> int | None:
        row = self._first(
            "SELECT id FROM charges WHERE processor_charge_id = ? ORDER BY id LIMIT 1",
            (processor_charge_id,),
        )
        return None if row is None else int(row[0])

    # --- disputes --------------------------------------------------------------

    def get_dispute(self, processor: str, processor_dispute_id: str) -> DisputeRecord | None:
        row = self._first(
            f"SELECT {_DISPUTE_COLUMNS} FROM disputes WHERE processor = ?"
            " AND processor_dispute_id = ?",
            (processor, processor_dispute_id),
        )
        return None if row is None else _dispute(row)

    def insert_dispute(self, d: DisputeRecord) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO disputes ({_DISPUTE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                d.id,
                d.processor,
                d.processor_dispute_id,
                d.charge_id,
                d.purpose,
                d.currency,
                d.amount_micros,
                d.customer_micros,
                d.merchant_micros,
                d.loss_micros,
                d.fee_micros,
                d.status,
                d.opened_at_us,
                d.closed_at_us or None,
            ),
        )

    def close_dispute(self, dispute_id: int, status: str, now_us: int) -> bool:
        """Move an open dispute to ``won``/``lost``, once. False if it was closed already."""
        self._cur.execute(
            self._sql(
                "UPDATE disputes SET status = ?, closed_at_us = ? WHERE id = ? AND status = 'open'"
            ),
            (status, now_us, dispute_id),
        )
        return self._cur.rowcount == 1

    def restore_entitlements(self, purchase_id: int) -> None:
        """Give back access revoked by a dispute the merchant won."""
        self._cur.execute(
            self._sql("UPDATE entitlements SET revoked = ? WHERE purchase_id = ?"),
            (False, purchase_id),
        )

    # --- adjustments -----------------------------------------------------------

    def find_adjustment(self, idempotency_key: str) -> AdjustmentRecord | None:
        row = self._first(
            f"SELECT {_ADJUSTMENT_COLUMNS} FROM adjustments WHERE idempotency_key = ?",
            (idempotency_key,),
        )
        return None if row is None else AdjustmentRecord(*row)

    def insert_adjustment(self, a: AdjustmentRecord) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO adjustments ({_ADJUSTMENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                a.id,
                a.idempotency_key,
                a.request_hash,
                a.account_id,
                a.currency,
                a.amount_micros,
                a.reason,
                a.actor,
                a.transfer_id,
                a.created_at_us,
            ),
        )

    def adjustments_for_account(self, account_id: int, limit: int) -> list[AdjustmentRecord]:
        self._cur.execute(
            self._sql(
                f"SELECT {_ADJUSTMENT_COLUMNS} FROM adjustments WHERE account_id = ?"
                " ORDER BY created_at_us, id LIMIT ?"
            ),
            (account_id, limit),
        )
        return [AdjustmentRecord(*row) for row in self._cur.fetchall()]
