"""SQL of tips, metered usage and subscriptions, shared by the SQLite and PostgreSQL adapters.

A mixin of :class:`micropay.store.payments_sql.PaymentsSql`: it uses the
adapter's cursor (``self._cur``) and placeholder rewriting (``self._sql``).

Concurrency: a usage event is claimed for a posting by one guarded UPDATE
(``posting_id IS NULL`` is re-checked on the latest row version under
PostgreSQL's READ COMMITTED), a subscription advances by compare-and-set on
its last paid period number, and UNIQUE constraints back both.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date
from typing import Any

from micropay.payments.billing import (
    Meter,
    PaidPeriod,
    Period,
    Plan,
    SubscriptionRecord,
    SubscriptionState,
    TipLimits,
    TipRecord,
    UsageClaim,
    UsagePosting,
    UsageRecord,
)
from micropay.store.sql import Cursor

_TIP_COLUMNS = (
    "id, merchant_id, customer_id, amount_micros, currency, funding, transfer_id, note,"
    " idempotency_key, request_hash, created_at_us"
)
_POSTING_COLUMNS = (
    "id, merchant_id, customer_id, meter, window_end_us, events, quantity, amount_micros,"
    " currency, funding, transfer_id, created_at_us"
)
_PLAN_COLUMNS = "merchant_id, plan_ref, name, period, price_micros, currency"
_SUBSCRIPTION_COLUMNS = (
    "id, merchant_id, customer_id, plan_ref, period, price_micros, currency, time_zone,"
    " anchor_date, period_number, period_starts_at_us, period_ends_at_us, state,"
    " cancel_at_period_end, idempotency_key, request_hash, created_at_us, updated_at_us"
)
_PERIOD_COLUMNS = (
    "id, subscription_id, period_number, starts_at_us, ends_at_us, purchase_id, transfer_id,"
    " created_at_us"
)


def _subscription(r: Sequence[Any]) -> SubscriptionRecord:
    return SubscriptionRecord(
        r[0],
        r[1],
        r[2],
        r[3],
        Period(r[4]),
        r[5],
        r[6],
        r[7],
        date.fromisoformat(r[8]),
        r[9],
        r[10],
        r[11],
        SubscriptionState(r[12]),
        bool(r[13]),
        r[14],
        r[15],
        r[16],
        r[17],
    )


class BillingSql:
    _cur: Cursor

    def _sql(self, text: str) -> str:
        return text

    def _b_one(self, statement: str, params: Sequence[object]) -> Any:
        self._cur.execute(self._sql(statement), params)
        rows = self._cur.fetchall()
        return rows[0] if rows else None

    def _b_all(self, statement: str, params: Sequence[object]) -> list[Any]:
        self._cur.execute(self._sql(statement), params)
        return self._cur.fetchall()

    # --- tips ----------------------------------------------------------------

    def get_tip_limits(self, merchant_id: int) -> TipLimits | None:
        row = self._b_one(
            "SELECT tip_micros_min, tip_micros_max FROM tip_limits WHERE merchant_id = ?",
            (merchant_id,),
        )
        return None if row is None else TipLimits(row[0], row[1])

    def set_tip_limits(self, merchant_id: int, tip_limits: TipLimits) -> None:
        self._cur.execute(self._sql("DELETE FROM tip_limits WHERE merchant_id = ?"), (merchant_id,))
        self._cur.execute(
            self._sql(
                "INSERT INTO tip_limits (merchant_id, tip_micros_min, tip_micros_max)"
                " VALUES (?,?,?)"
            ),
            (merchant_id, tip_limits.tip_micros_min, tip_limits.tip_micros_max),
        )

    def find_tip(self, merchant_id: int, idempotency_key: str) -> TipRecord | None:
        row = self._b_one(
            f"SELECT {_TIP_COLUMNS} FROM tips WHERE merchant_id = ? AND idempotency_key = ?",
            (merchant_id, idempotency_key),
        )
        return None if row is None else TipRecord(*row)

    def insert_tip(self, t: TipRecord, item_ref: str = "") -> None:
        """The tip's row; ``item_ref`` is what it is for ("" for nothing in particular)."""
        self._cur.execute(
            self._sql(
                f"INSERT INTO tips ({_TIP_COLUMNS}, item_ref) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                t.id,
                t.merchant_id,
                t.customer_id,
                t.amount_micros,
                t.currency,
                t.funding,
                t.transfer_id,
                t.note,
                t.idempotency_key,
                t.request_hash,
                t.created_at_us,
                item_ref,
            ),
        )

    # --- meters and usage ------------------------------------------------------

    def upsert_meter(self, m: Meter) -> None:
        self._cur.execute(
            self._sql("DELETE FROM meters WHERE merchant_id = ? AND meter = ?"),
            (m.merchant_id, m.meter),
        )
        self._cur.execute(
            self._sql(
                "INSERT INTO meters (merchant_id, meter, unit_price_micros, currency)"
                " VALUES (?,?,?,?)"
            ),
            (m.merchant_id, m.meter, m.unit_price_micros, m.currency),
        )

    def get_meter(self, merchant_id: int, meter: str) -> Meter | None:
        row = self._b_one(
            "SELECT merchant_id, meter, unit_price_micros, currency FROM meters"
            " WHERE merchant_id = ? AND meter = ?",
            (merchant_id, meter),
        )
        return None if row is None else Meter(*row)

    def insert_usage_event(
        self,
        event_id: int,
        merchant_id: int,
        customer_id: int,
        meter: str,
        quantity: int,
        idempotency_key: str,
        now_us: int,
    ) -> bool:
        """One INSERT: priced from the meter, only for a customer in the meter's currency.

        False when nothing was inserted: the key is taken, or the meter or the
        customer is missing or in another currency (the caller looks up which).
        """
        self._cur.execute(
            self._sql(
                "INSERT INTO usage_events (id, merchant_id, customer_id, meter, quantity,"
                " unit_price_micros, idempotency_key, occurred_at_us)"
                " SELECT ?, m.merchant_id, c.id, m.meter, ?, m.unit_price_micros, ?, ?"
                " FROM meters m JOIN customers c ON c.id = ? AND c.currency = m.currency"
                " WHERE m.merchant_id = ? AND m.meter = ?"
                " ON CONFLICT (merchant_id, idempotency_key) DO NOTHING"
            ),
            (event_id, quantity, idempotency_key, now_us, customer_id, merchant_id, meter),
        )
        return self._cur.rowcount == 1

    def find_usage_event(self, merchant_id: int, idempotency_key: str) -> UsageRecord | None:
        row = self._b_one(
            "SELECT customer_id, meter, quantity FROM usage_events"
            " WHERE merchant_id = ? AND idempotency_key = ?",
            (merchant_id, idempotency_key),
        )
        return None if row is None else UsageRecord(*row)

    def unbilled_usage_groups(self, window_end_us: int, limit: int) -> list[tuple[int, int, str]]:
        rows = self._b_all(
            "SELECT merchant_id, customer_id, meter FROM usage_events"
            " WHERE posting_id IS NULL AND occurred_at_us < ?"
            " GROUP BY merchant_id, customer_id, meter"
            " ORDER BY merchant_id, customer_id, meter LIMIT ?",
            (window_end_us, limit),
        )
        return [(r[0], r[1], r[2]) for r in rows]

    def find_usage_posting(
        self, merchant_id: int, customer_id: int, meter: str, window_end_us: int
    ) -> UsagePosting | None:
        row = self._b_one(
            f"SELECT {_POSTING_COLUMNS} FROM usage_postings WHERE merchant_id = ?"
            " AND customer_id = ? AND meter = ? AND window_end_us = ?",
            (merchant_id, customer_id, meter, window_end_us),
        )
        return None if row is None else UsagePosting(*row)

    def claim_usage(
        self,
        posting_id: int,
        merchant_id: int,
        customer_id: int,
        meter: str,
        window_end_us: int,
        limit: int,
    ) -> UsageClaim:
        """Mark up to ``limit`` unbilled events before the window end with ``posting_id``."""
        self._cur.execute(
            self._sql(
                "UPDATE usage_events SET posting_id = ? WHERE posting_id IS NULL AND id IN ("
                " SELECT id FROM usage_events WHERE merchant_id = ? AND customer_id = ?"
                " AND meter = ? AND posting_id IS NULL AND occurred_at_us < ?"
                " ORDER BY occurred_at_us, id LIMIT ?)"
            ),
            (posting_id, merchant_id, customer_id, meter, window_end_us, limit),
        )
        row = self._b_one(
            "SELECT COUNT(*), CAST(COALESCE(SUM(quantity), 0) AS BIGINT),"
            " CAST(COALESCE(SUM(quantity * unit_price_micros), 0) AS BIGINT)"
            " FROM usage_events WHERE posting_id = ?",
            (posting_id,),
        )
        return UsageClaim(int(row[0]), int(row[1]), int(row[2]))

    def insert_usage_posting(self, p: UsagePosting) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO usage_postings ({_POSTING_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                p.id,
                p.merchant_id,
                p.customer_id,
                p.meter,
                p.window_end_us,
                p.events,
                p.quantity,
                p.amount_micros,
                p.currency,
                p.funding,
                p.transfer_id,
                p.created_at_us,
            ),
        )

    def usage_postings(self, merchant_id: int, customer_id: int) -> list[UsagePosting]:
        rows = self._b_all(
            f"SELECT {_POSTING_COLUMNS} FROM usage_postings WHERE merchant_id = ?"
            " AND customer_id = ? ORDER BY window_end_us, meter",
            (merchant_id, customer_id),
        )
        return [UsagePosting(*r) for r in rows]

    def usage_events_unbilled(self, merchant_id: int, customer_id: int) -> int:
        row = self._b_one(
            "SELECT COUNT(*) FROM usage_events WHERE merchant_id = ? AND customer_id = ?"
            " AND posting_id IS NULL",
            (merchant_id, customer_id),
        )
        return int(row[0])

    # --- plans and subscriptions -------------------------------------------------

    def upsert_plan(self, p: Plan) -> None:
        self._cur.execute(
            self._sql("DELETE FROM subscription_plans WHERE merchant_id = ? AND plan_ref = ?"),
            (p.merchant_id, p.plan_ref),
        )
        self._cur.execute(
            self._sql(f"INSERT INTO subscription_plans ({_PLAN_COLUMNS}) VALUES (?,?,?,?,?,?)"),
            (p.merchant_id, p.plan_ref, p.name, p.period.value, p.price_micros, p.currency),
        )

    def get_plan(self, merchant_id: int, plan_ref: str) -> Plan | None:
        row = self._b_one(
            f"SELECT {_PLAN_COLUMNS} FROM subscription_plans WHERE merchant_id = ?"
            " AND plan_ref = ?",
            (merchant_id, plan_ref),
        )
        if row is None:
            return None
        return Plan(row[0], row[1], row[2], Period(row[3]), row[4], row[5])

    def insert_subscription(self, s: SubscriptionRecord) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO subscriptions ({_SUBSCRIPTION_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                s.id,
                s.merchant_id,
                s.customer_id,
                s.plan_ref,
                s.period.value,
                s.price_micros,
                s.currency,
                s.time_zone,
                s.anchor_date.isoformat(),
                s.period_number,
                s.period_starts_at_us,
                s.period_ends_at_us,
                s.state.value,
                s.cancel_at_period_end,
                s.idempotency_key,
                s.request_hash,
                s.created_at_us,
                s.updated_at_us,
            ),
        )

    def get_subscription(self, subscription_id: int) -> SubscriptionRecord | None:
        row = self._b_one(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE id = ?", (subscription_id,)
        )
        return None if row is None else _subscription(row)

    def find_subscription(
        self, merchant_id: int, idempotency_key: str
    ) -> SubscriptionRecord | None:
        row = self._b_one(
            f"SELECT {_SUBSCRIPTION_COLUMNS} FROM subscriptions WHERE merchant_id = ?"
            " AND idempotency_key = ?",
            (merchant_id, idempotency_key),
        )
        return None if row is None else _subscription(row)

    def due_subscriptions(self, now_us: int, limit: int) -> list[int]:
        rows = self._b_all(
            "SELECT id FROM subscriptions WHERE state <> 'cancelled' AND period_ends_at_us <= ?"
            " ORDER BY period_ends_at_us, id LIMIT ?",
            (now_us, limit),
        )
        return [r[0] for r in rows]

    def advance_subscription(
        self,
        subscription_id: int,
        paid_number: int,
        number: int,
        starts_us: int,
        ends_us: int,
        now_us: int,
    ) -> bool:
        """Record period ``number`` as paid, only if ``paid_number`` is still the last paid one
        and the subscription is neither cancelled nor set to cancel. False otherwise."""
        self._cur.execute(
            self._sql(
                "UPDATE subscriptions SET period_number = ?, period_starts_at_us = ?,"
                " period_ends_at_us = ?, state = 'active', updated_at_us = ?"
                " WHERE id = ? AND period_number = ? AND state <> 'cancelled'"
                " AND cancel_at_period_end = ?"
            ),
            (number, starts_us, ends_us, now_us, subscription_id, paid_number, False),
        )
        return self._cur.rowcount == 1

    def set_subscription_state(
        self, subscription_id: int, paid_number: int, state: SubscriptionState, now_us: int
    ) -> bool:
        """Move to ``state`` unless the subscription moved on (or was cancelled) meanwhile."""
        self._cur.execute(
            self._sql(
                "UPDATE subscriptions SET state = ?, updated_at_us = ?"
                " WHERE id = ? AND period_number = ? AND state <> 'cancelled'"
            ),
            (state.value, now_us, subscription_id, paid_number),
        )
        return self._cur.rowcount == 1

    def request_cancel(self, subscription_id: int, now_us: int) -> bool:
        self._cur.execute(
            self._sql(
                "UPDATE subscriptions SET cancel_at_period_end = ?, updated_at_us = ?"
                " WHERE id = ? AND state <> 'cancelled'"
            ),
            (True, now_us, subscription_id),
        )
        return self._cur.rowcount == 1

    def insert_paid_period(self, p: PaidPeriod) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO subscription_periods ({_PERIOD_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"
            ),
            (
                p.id,
                p.subscription_id,
                p.period_number,
                p.starts_at_us,
                p.ends_at_us,
                p.purchase_id,
                p.transfer_id,
                p.created_at_us,
            ),
        )

    def paid_periods(self, subscription_id: int) -> list[PaidPeriod]:
        rows = self._b_all(
            f"SELECT {_PERIOD_COLUMNS} FROM subscription_periods WHERE subscription_id = ?"
            " ORDER BY period_number",
            (subscription_id,),
        )
        return [PaidPeriod(*r) for r in rows]
