"""SQL of payouts and revenue sharing, shared by the SQLite and PostgreSQL adapters.

A mixin over the adapters' transaction classes: it uses their cursor
(``self._cur``) and placeholder rewriting (``self._sql``) and nothing else.
Guarded UPDATEs (``... WHERE released = false``, ``... AND refunded + ? <=
gross``) make each state change happen at most once under concurrency.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from micropay.payouts.plans import (
    Payee,
    PayoutRecord,
    SaleRecord,
    SaleShare,
    Schedule,
    Verification,
)
from micropay.payouts.splits import PlatformFee, Share
from micropay.store.sql import Cursor, as_mixin

_PAYEE_COLUMNS = (
    "id, public_id, name, currency, destination_token, verified, schedule, threshold_micros, hold_s"
)
_SALE_COLUMNS = (
    "purchase_id, merchant_id, currency, gross_micros, fee_micros, fee_reversed_micros,"
    " refunded_micros, created_at_us"
)
_SHARE_COLUMNS = (
    "purchase_id, payee_id, position, amount_micros, reversed_micros, release_at_us, released"
)
_PAYOUT_COLUMNS = (
    "id, payee_id, purpose, period_key, amount_micros, currency, status, hold_transfer_id,"
    " processor_payout_id, created_at_us, updated_at_us"
)


def _payee(r: Sequence[Any]) -> Payee:
    return Payee(r[0], r[1], r[2], r[3], r[4], bool(r[5]), Schedule(r[6]), r[7], r[8])


def _share(r: Sequence[Any]) -> SaleShare:
    return SaleShare(r[0], r[1], r[2], r[3], r[4], r[5], bool(r[6]))


def _payout(r: Sequence[Any]) -> PayoutRecord:
    return PayoutRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8], r[9], r[10])


class PayoutsSql:
    """Payout queries; to be mixed into ``PaymentsSql`` (meanwhile bound by the service)."""

    _cur: Cursor

    def _sql(self, text: str) -> str:
        return text

    def _po_one(self, statement: str, params: Sequence[object]) -> Any:
        self._cur.execute(self._sql(statement), params)
        rows = self._cur.fetchall()
        return rows[0] if rows else None

    def _po_all(self, statement: str, params: Sequence[object]) -> list[Any]:
        self._cur.execute(self._sql(statement), params)
        return list(self._cur.fetchall())

    def _po_exec(self, statement: str, params: Sequence[object]) -> int:
        self._cur.execute(self._sql(statement), params)
        return int(self._cur.rowcount)

    # --- payees ----------------------------------------------------------

    def insert_payee(self, p: Payee, now_us: int) -> int:
        row = self._po_one(
            "INSERT INTO payees (public_id, name, currency, destination_token, verified,"
            " schedule, threshold_micros, hold_s, created_at_us) VALUES (?,?,?,?,?,?,?,?,?)"
            " RETURNING id",
            (
                p.public_id,
                p.name,
                p.currency,
                p.destination_token,
                p.verified,
                p.schedule.value,
                p.threshold_micros,
                p.hold_s,
                now_us,
            ),
        )
        return int(row[0])

    def get_payee(self, payee_id: int) -> Payee | None:
        row = self._po_one(f"SELECT {_PAYEE_COLUMNS} FROM payees WHERE id = ?", (payee_id,))
        return None if row is None else _payee(row)

    def set_payee_verified(self, payee_id: int) -> bool:
        return (
            self._po_exec(
                "UPDATE payees SET verified = ? WHERE id = ? AND verified = ?",
                (True, payee_id, False),
            )
            == 1
        )

    def scheduled_payees(self, after_id: int, limit: int) -> list[int]:
        """Verified payees on a schedule (not manual), in id order after ``after_id``."""
        rows = self._po_all(
            "SELECT id FROM payees WHERE verified = ? AND schedule <> 'manual' AND id > ?"
            " ORDER BY id LIMIT ?",
            (True, after_id, limit),
        )
        return [int(r[0]) for r in rows]

    # --- platform fee and splits -------------------------------------------

    def set_platform_fee(self, merchant_id: int, fee: PlatformFee) -> None:
        self._po_exec("DELETE FROM platform_fees WHERE merchant_id = ?", (merchant_id,))
        self._po_exec(
            "INSERT INTO platform_fees (merchant_id, fee_bps, fixed_micros) VALUES (?,?,?)",
            (merchant_id, fee.fee_bps, fee.fixed_micros),
        )

    def get_platform_fee(self, merchant_id: int) -> PlatformFee | None:
        row = self._po_one(
            "SELECT fee_bps, fixed_micros FROM platform_fees WHERE merchant_id = ?",
            (merchant_id,),
        )
        return None if row is None else PlatformFee(int(row[0]), int(row[1]))

    def set_split(self, merchant_id: int, item_ref: str, shares: Sequence[Share]) -> None:
        self._po_exec(
            "DELETE FROM item_splits WHERE merchant_id = ? AND item_ref = ?",
            (merchant_id, item_ref),
        )
        for position, share in enumerate(shares):
            self._po_exec(
                "INSERT INTO item_splits (merchant_id, item_ref, payee_id, position, share_bps)"
                " VALUES (?,?,?,?,?)",
                (merchant_id, item_ref, share.payee_id, position, share.share_bps),
            )

    def get_split(self, merchant_id: int, item_ref: str) -> list[Share]:
        rows = self._po_all(
            "SELECT payee_id, share_bps FROM item_splits WHERE merchant_id = ? AND item_ref = ?"
            " ORDER BY position",
            (merchant_id, item_ref),
        )
        return [Share(int(r[0]), int(r[1])) for r in rows]

    # --- sales, shares, reversals -------------------------------------------

    def insert_sale(
        self, s: SaleRecord, shares: Sequence[SaleShare], *, tip_id: int | None = None
    ) -> None:
        """A sale and its shares. ``s.purchase_id`` is the purchase's id, or the tip's when
        ``tip_id`` is given (a tip's earnings: ``tip_id = purchase_id``)."""
        self._po_exec(
            f"INSERT INTO sales ({_SALE_COLUMNS}, tip_id) VALUES (?,?,?,?,?,?,?,?,?)",
            (
                s.purchase_id,
                s.merchant_id,
                s.currency,
                s.gross_micros,
                s.fee_micros,
                s.fee_reversed_micros,
                s.refunded_micros,
                s.created_at_us,
                tip_id,
            ),
        )
        for sh in shares:
            self._po_exec(
                f"INSERT INTO sale_shares ({_SHARE_COLUMNS}) VALUES (?,?,?,?,?,?,?)",
                (
                    sh.purchase_id,
                    sh.payee_id,
                    sh.position,
                    sh.amount_micros,
                    sh.reversed_micros,
                    sh.release_at_us,
                    sh.released,
                ),
            )

    def get_sale(self, purchase_id: int) -> SaleRecord | None:
        row = self._po_one(
            f"SELECT {_SALE_COLUMNS} FROM sales WHERE purchase_id = ?", (purchase_id,)
        )
        return None if row is None else SaleRecord(*row)

    def sale_problems(self, limit: int) -> list[str]:
        """Sales that name neither a purchase nor a tip (reconcile).

        A sale is keyed by its purchase's id or, with ``tip_id`` set, its tip's
        (which a foreign key checks); a purchase's sale has no foreign key
        since the key serves both, so this check stands in for it.
        """
        rows = self._po_all(
            "SELECT s.purchase_id FROM sales s WHERE s.tip_id IS NULL AND NOT EXISTS"
            " (SELECT 1 FROM purchases p WHERE p.id = s.purchase_id)"
            " ORDER BY s.purchase_id LIMIT ?",
            (limit,),
        )
        return [f"sale {row[0]} names no purchase and no tip" for row in rows]

    def sale_shares(self, purchase_id: int) -> list[SaleShare]:
        rows = self._po_all(
            f"SELECT {_SHARE_COLUMNS} FROM sale_shares WHERE purchase_id = ? ORDER BY position",
            (purchase_id,),
        )
        return [_share(r) for r in rows]

    def add_sale_reversal(self, purchase_id: int, refund_micros: int, fee_micros: int) -> bool:
        """Count a refund against a sale, once and never past its gross (guarded)."""
        return (
            self._po_exec(
                "UPDATE sales SET refunded_micros = refunded_micros + ?,"
                " fee_reversed_micros = fee_reversed_micros + ?"
                " WHERE purchase_id = ? AND refunded_micros + ? <= gross_micros",
                (refund_micros, fee_micros, purchase_id, refund_micros),
            )
            == 1
        )

    def add_share_reversed(self, purchase_id: int, payee_id: int, amount_micros: int) -> bool:
        return (
            self._po_exec(
                "UPDATE sale_shares SET reversed_micros = reversed_micros + ?"
                " WHERE purchase_id = ? AND payee_id = ? AND reversed_micros + ? <= amount_micros",
                (amount_micros, purchase_id, payee_id, amount_micros),
            )
            == 1
        )

    def insert_reversal(
        self, refund_id: int, purchase_id: int, amount_micros: int, now_us: int
    ) -> bool:
        """False when this refund was already reversed (idempotency)."""
        if self._po_one("SELECT 1 FROM sale_reversals WHERE refund_id = ?", (refund_id,)):
            return False
        self._po_exec(
            "INSERT INTO sale_reversals (refund_id, purchase_id, amount_micros, created_at_us)"
            " VALUES (?,?,?,?)",
            (refund_id, purchase_id, amount_micros, now_us),
        )
        return True

    def due_shares(self, now_us: int, limit: int) -> list[SaleShare]:
        rows = self._po_all(
            f"SELECT {_SHARE_COLUMNS} FROM sale_shares WHERE released = ? AND release_at_us <= ?"
            " ORDER BY release_at_us, purchase_id, payee_id LIMIT ?",
            (False, now_us, limit),
        )
        return [_share(r) for r in rows]

    def mark_share_released(self, purchase_id: int, payee_id: int) -> int | None:
        """Release a share once: what remains of it to move, or None if already released."""
        row = self._po_one(
            "UPDATE sale_shares SET released = ? WHERE purchase_id = ? AND payee_id = ?"
            " AND released = ? RETURNING amount_micros - reversed_micros",
            (True, purchase_id, payee_id, False),
        )
        return None if row is None else int(row[0])

    # --- payouts -------------------------------------------------------------

    def insert_payout(self, p: PayoutRecord) -> None:
        self._po_exec(
            f"INSERT INTO payouts ({_PAYOUT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
            (
                p.id,
                p.payee_id,
                p.purpose,
                p.period_key,
                p.amount_micros,
                p.currency,
                p.status,
                p.hold_transfer_id,
                p.processor_payout_id,
                p.created_at_us,
                p.updated_at_us,
            ),
        )

    def get_payout(self, payout_id: int) -> PayoutRecord | None:
        row = self._po_one(f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE id = ?", (payout_id,))
        return None if row is None else _payout(row)

    def find_payout(self, payee_id: int, purpose: str, period_key: str) -> PayoutRecord | None:
        row = self._po_one(
            f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE payee_id = ? AND purpose = ?"
            " AND period_key = ?",
            (payee_id, purpose, period_key),
        )
        return None if row is None else _payout(row)

    def finish_payout(
        self, payout_id: int, status: str, processor_payout_id: str, now_us: int
    ) -> bool:
        """Move a pending payout to its final status, at most once."""
        return (
            self._po_exec(
                "UPDATE payouts SET status = ?, processor_payout_id = ?, updated_at_us = ?"
                " WHERE id = ? AND status = 'pending'",
                (status, processor_payout_id, now_us, payout_id),
            )
            == 1
        )

    def pending_payouts(self, limit: int) -> list[int]:
        rows = self._po_all(
            "SELECT id FROM payouts WHERE status = 'pending' ORDER BY created_at_us, id LIMIT ?",
            (limit,),
        )
        return [int(r[0]) for r in rows]

    def payee_payouts(self, payee_id: int) -> list[PayoutRecord]:
        rows = self._po_all(
            f"SELECT {_PAYOUT_COLUMNS} FROM payouts WHERE payee_id = ? ORDER BY created_at_us, id",
            (payee_id,),
        )
        return [_payout(r) for r in rows]

    def payouts_for_reconcile(self) -> list[PayoutRecord]:
        rows = self._po_all(f"SELECT {_PAYOUT_COLUMNS} FROM payouts ORDER BY id", ())
        return [_payout(r) for r in rows]

    # --- micro-deposit verification -------------------------------------------

    def insert_verification(self, v: Verification, now_us: int) -> None:
        self._po_exec(
            "INSERT INTO payee_verifications (payee_id, first_micros, second_micros, attempts,"
            " status, created_at_us, updated_at_us) VALUES (?,?,?,?,?,?,?)",
            (v.payee_id, v.first_micros, v.second_micros, v.attempts, v.status, now_us, now_us),
        )

    def get_verification(self, payee_id: int) -> Verification | None:
        row = self._po_one(
            "SELECT payee_id, first_micros, second_micros, attempts, status"
            " FROM payee_verifications WHERE payee_id = ?",
            (payee_id,),
        )
        return None if row is None else Verification(*row)

    def update_verification(
        self, payee_id: int, attempts: int, status: str, was_attempts: int, now_us: int
    ) -> bool:
        """Record a guess; guarded on the attempts read, so two racing guesses count twice."""
        return (
            self._po_exec(
                "UPDATE payee_verifications SET attempts = ?, status = ?, updated_at_us = ?"
                " WHERE payee_id = ? AND attempts = ? AND status = 'pending'",
                (attempts, status, now_us, payee_id, was_attempts),
            )
            == 1
        )


def bind_payouts_sql(tx: Any) -> Any:
    """The payout SQL over a store transaction (bound to its cursor until mixed in)."""
    return as_mixin(tx, PayoutsSql)
