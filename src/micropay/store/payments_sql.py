"""SQL of the payment models, shared by the SQLite and PostgreSQL adapters.

A mixin over the adapters' transaction classes: it uses their cursor
(``self._cur``), placeholder rewriting (``self._sql``) and nothing else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, cast

from micropay.payments.models import (
    Customer,
    FundingSource,
    Item,
    Merchant,
    TabState,
)
from micropay.payments.records import (
    ChargeRecord,
    EntitlementRecord,
    PurchaseRecord,
    RefundRecord,
)
from micropay.store.api_sql import ApiSql
from micropay.store.billing_sql import BillingSql
from micropay.store.events_sql import ProcessorEventsSql
from micropay.store.gift_cards_sql import GiftCardsSql
from micropay.store.jobs_sql import JobsSql
from micropay.store.payouts_sql import PayoutsSql
from micropay.store.sql import Cursor
from micropay.store.webhooks_sql import WebhooksSql

_MERCHANT_COLUMNS = (
    "id, public_id, name, currency, funding_policy, fee_guard_max_bps, fee_guard_refuses"
)
_CUSTOMER_COLUMNS = (
    "id, public_id, currency, processor_customer_token, payment_method_token, tab_limit_micros,"
    " tab_state, tab_opened_at_us, auto_reload_threshold_micros, auto_reload_amount_micros"
)
_ITEM_COLUMNS = "merchant_id, item_ref, name, price_micros, currency, access_period_s, consumable"
_PURCHASE_COLUMNS = (
    "id, merchant_id, customer_id, item_ref, price_micros, currency, funding, status,"
    " transfer_id, charge_id, idempotency_key, request_hash, refunded_micros, created_at_us"
)
_CHARGE_COLUMNS = (
    "id, customer_id, purpose, client_key, request_hash, amount_micros, currency, fee_micros,"
    " schedule, status, processor_charge_id, decline_code, attempts, next_attempt_at_us,"
    " purchase_id, created_at_us, updated_at_us"
)
_REFUND_COLUMNS = (
    "id, purchase_id, idempotency_key, request_hash, amount_micros, destination, status,"
    " transfer_id, processor_refund_id, created_at_us"
)
_ENTITLEMENT_COLUMNS = (
    "id, merchant_id, customer_id, item_ref, purchase_id, starts_at_us, ends_at_us, revoked"
)


def _merchant(row: Sequence[Any]) -> Merchant:
    policy = tuple(FundingSource(s) for s in str(row[4]).split(",") if s)
    return Merchant(row[0], row[1], row[2], row[3], policy, row[5], bool(row[6]))


def _customer(row: Sequence[Any]) -> Customer:
    return Customer(
        row[0], row[1], row[2], row[3], row[4], row[5], TabState(row[6]), row[7], row[8], row[9]
    )


def _purchase(r: Sequence[Any]) -> PurchaseRecord:
    return PurchaseRecord(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        FundingSource(r[6]),
        r[7],
        r[8],
        r[9],
        r[10],
        r[11],
        r[12],
        r[13],
    )


def _charge(r: Sequence[Any]) -> ChargeRecord:
    return ChargeRecord(
        r[0],
        r[1],
        r[2],
        r[3],
        r[4],
        r[5],
        r[6],
        r[7],
        r[8],
        r[9],
        r[10],
        r[11],
        r[12],
        r[13] or 0,
        r[14] or 0,
        r[15],
        r[16],
    )


def _entitlement(r: Sequence[Any]) -> EntitlementRecord:
    return EntitlementRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6] or 0, bool(r[7]))


def _refund(r: Sequence[Any]) -> RefundRecord:
    return RefundRecord(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7], r[8] or "", r[9])


class PaymentsSql(
    GiftCardsSql, BillingSql, ProcessorEventsSql, ApiSql, JobsSql, PayoutsSql, WebhooksSql
):
    """Payment-model queries; mixed into each adapter's read and write transaction classes.

    Within one transaction, merchants, customers and purchases already read
    (or inserted) are remembered: a purchase's hooks (the outbox, metrics,
    revenue splits) read the same rows again and get them without a round
    trip. Every statement here that changes one of these tables forgets what
    was remembered of it; SQL written elsewhere must call :meth:`forget_rows`.
    A transaction object lives for one transaction, so nothing is remembered
    across transactions.
    """

    _cur: Cursor
    _rows: dict[tuple[str, int], Any]

    def _sql(self, text: str) -> str:
        return text

    def _memo(self) -> dict[tuple[str, int], Any]:
        try:
            return self._rows
        except AttributeError:
            self._rows = {}
            return self._rows

    def remember_merchant(self, merchant: Merchant) -> None:
        """A merchant the caller already holds (merchant rows never change)."""
        self._memo()["merchants", merchant.id] = merchant

    def forget_rows(self, table: str | None = None) -> None:
        """Forget remembered rows (of ``table``, else all): SQL elsewhere changed them."""
        memo = self._memo()
        if table is None:
            memo.clear()
        else:
            for key in [k for k in memo if k[0] == table]:
                del memo[key]

    def _one(self, statement: str, params: Sequence[object]) -> Any:
        self._cur.execute(self._sql(statement), params)
        rows = self._cur.fetchall()
        return rows[0] if rows else None

    def _all(self, statement: str, params: Sequence[object]) -> list[Any]:
        self._cur.execute(self._sql(statement), params)
        return self._cur.fetchall()

    # --- parties and catalogue ------------------------------------------

    def insert_merchant(self, m: Merchant, now_us: int) -> int:
        row = self._one(
            "INSERT INTO merchants (public_id, name, currency, funding_policy,"
            " fee_guard_max_bps, fee_guard_refuses, created_at_us) VALUES (?,?,?,?,?,?,?)"
            " RETURNING id",
            (
                m.public_id,
                m.name,
                m.currency,
                ",".join(s.value for s in m.funding_policy),
                m.fee_guard_max_bps,
                m.fee_guard_refuses,
                now_us,
            ),
        )
        return int(row[0])

    def get_merchant(self, merchant_id: int) -> Merchant | None:
        memo = self._memo()
        found = memo.get(("merchants", merchant_id))
        if found is not None:
            return cast(Merchant, found)
        row = self._one(f"SELECT {_MERCHANT_COLUMNS} FROM merchants WHERE id = ?", (merchant_id,))
        if row is None:
            return None
        merchant = memo["merchants", merchant_id] = _merchant(row)
        return merchant

    def find_merchant(self, public_id: str) -> Merchant | None:
        row = self._one(
            f"SELECT {_MERCHANT_COLUMNS} FROM merchants WHERE public_id = ?", (public_id,)
        )
        return None if row is None else _merchant(row)

    def insert_customer(self, c: Customer, now_us: int) -> int:
        row = self._one(
            "INSERT INTO customers (public_id, currency, processor_customer_token,"
            " payment_method_token, tab_limit_micros, tab_state, tab_opened_at_us,"
            " auto_reload_threshold_micros, auto_reload_amount_micros, created_at_us)"
            " VALUES (?,?,?,?,?,?,?,?,?,?) RETURNING id",
            (
                c.public_id,
                c.currency,
                c.processor_customer_token,
                c.payment_method_token,
                c.tab_limit_micros,
                c.tab_state.value,
                c.tab_opened_at_us,
                c.auto_reload_threshold_micros,
                c.auto_reload_amount_micros,
                now_us,
            ),
        )
        return int(row[0])

    def get_customer(self, customer_id: int) -> Customer | None:
        memo = self._memo()
        found = memo.get(("customers", customer_id))
        if found is not None:
            return cast(Customer, found)
        row = self._one(f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE id = ?", (customer_id,))
        if row is None:
            return None
        customer = memo["customers", customer_id] = _customer(row)
        return customer

    def find_customer(self, public_id: str) -> Customer | None:
        row = self._one(
            f"SELECT {_CUSTOMER_COLUMNS} FROM customers WHERE public_id = ?", (public_id,)
        )
        if row is None:
            return None
        customer = self._memo()["customers", row[0]] = _customer(row)
        return customer

    def find_api_customer(self, public_id: str) -> tuple[Customer, int | None] | None:
        """The customer with this public id and the merchant that owns it through the API."""
        row = self._one(
            f"SELECT {_CUSTOMER_COLUMNS}, a.merchant_id FROM customers c"
            " LEFT JOIN api_customers a ON a.customer_id = c.id WHERE c.public_id = ?",
            (public_id,),
        )
        if row is None:
            return None
        customer = self._memo()["customers", row[0]] = _customer(row)
        return customer, row[10]

    def update_customer_tab(
        self, customer_id: int, limit_micros: int, state: TabState, opened_at_us: int
    ) -> None:
        self.forget_rows("customers")
        self._cur.execute(
            self._sql(
                "UPDATE customers SET tab_limit_micros = ?, tab_state = ?, tab_opened_at_us = ?"
                " WHERE id = ?"
            ),
            (limit_micros, state.value, opened_at_us, customer_id),
        )

    def update_customer_auto_reload(
        self, customer_id: int, threshold_micros: int, amount_micros: int
    ) -> bool:
        self.forget_rows("customers")
        self._cur.execute(
            self._sql(
                "UPDATE customers SET auto_reload_threshold_micros = ?,"
                " auto_reload_amount_micros = ? WHERE id = ?"
            ),
            (threshold_micros, amount_micros, customer_id),
        )
        return self._cur.rowcount == 1

    def customers_with_tab_period_ended(self, before_us: int, limit: int) -> list[int]:
        rows = self._all(
            # A frozen tab waits for its charge to be paid, not for its period:
            # left in, frozen tabs would sort first and fill every page.
            "SELECT id FROM customers WHERE tab_opened_at_us <= ? AND tab_state <> ?"
            " ORDER BY tab_opened_at_us, id LIMIT ?",
            (before_us, TabState.frozen.value, limit),
        )
        return [row[0] for row in rows]

    def upsert_item(self, item: Item) -> None:
        self._cur.execute(
            self._sql("DELETE FROM items WHERE merchant_id = ? AND item_ref = ?"),
            (item.merchant_id, item.item_ref),
        )
        self._cur.execute(
            self._sql(f"INSERT INTO items ({_ITEM_COLUMNS}) VALUES (?,?,?,?,?,?,?)"),
            (
                item.merchant_id,
                item.item_ref,
                item.name,
                item.price_micros,
                item.currency,
                item.access_period_s,
                item.consumable,
            ),
        )

    def get_item(self, merchant_id: int, item_ref: str) -> Item | None:
        row = self._one(
            f"SELECT {_ITEM_COLUMNS} FROM items WHERE merchant_id = ? AND item_ref = ?",
            (merchant_id, item_ref),
        )
        if row is None:
            return None
        return Item(row[0], row[1], row[2], row[3], row[4], row[5], bool(row[6]))

    # --- purchases and entitlements --------------------------------------

    def find_purchase(self, merchant_id: int, idempotency_key: str) -> PurchaseRecord | None:
        row = self._one(
            f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE merchant_id = ?"
            " AND idempotency_key = ?",
            (merchant_id, idempotency_key),
        )
        return None if row is None else _purchase(row)

    def pending_purchase(
        self, merchant_id: int, customer_id: int, item_ref: str
    ) -> PurchaseRecord | None:
        """The purchase of this item whose direct charge still waits, if any."""
        row = self._one(
            f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE merchant_id = ?"
            " AND customer_id = ? AND item_ref = ? AND status = 'charge_pending'"
            " ORDER BY created_at_us, id LIMIT 1",
            (merchant_id, customer_id, item_ref),
        )
        return None if row is None else _purchase(row)

    def purchase_lookups(
        self, merchant_id: int, idempotency_key: str, customer_id: int, item_ref: str
    ) -> tuple[PurchaseRecord | None, PurchaseRecord | None]:
        """``find_purchase`` and ``pending_purchase`` in one round trip: (by key, waiting)."""
        rows = self._all(
            f"SELECT 0, {_PURCHASE_COLUMNS} FROM purchases WHERE merchant_id = ?"
            " AND idempotency_key = ?"
            f" UNION ALL SELECT 1, w.* FROM (SELECT {_PURCHASE_COLUMNS} FROM purchases"
            " WHERE customer_id = ? AND merchant_id = ? AND item_ref = ?"
            " AND status = 'charge_pending' ORDER BY created_at_us, id LIMIT 1) w",
            (merchant_id, idempotency_key, customer_id, merchant_id, item_ref),
        )
        found: list[PurchaseRecord | None] = [None, None]
        for row in rows:
            found[row[0]] = _purchase(row[1:])
        return found[0], found[1]

    def get_purchase(self, purchase_id: int) -> PurchaseRecord | None:
        memo = self._memo()
        found = memo.get(("purchases", purchase_id))
        if found is not None:
            return cast(PurchaseRecord, found)
        row = self._one(f"SELECT {_PURCHASE_COLUMNS} FROM purchases WHERE id = ?", (purchase_id,))
        if row is None:
            return None
        purchase = memo["purchases", purchase_id] = _purchase(row)
        return purchase

    def insert_purchase(self, p: PurchaseRecord) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO purchases ({_PURCHASE_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                p.id,
                p.merchant_id,
                p.customer_id,
                p.item_ref,
                p.price_micros,
                p.currency,
                p.funding.value,
                p.status,
                p.transfer_id,
                p.charge_id,
                p.idempotency_key,
                p.request_hash,
                p.refunded_micros,
                p.created_at_us,
            ),
        )
        self._memo()["purchases", p.id] = p

    def complete_purchase(self, purchase_id: int, status: str, transfer_id: int | None) -> None:
        self.forget_rows("purchases")
        self._cur.execute(
            self._sql("UPDATE purchases SET status = ?, transfer_id = ? WHERE id = ?"),
            (status, transfer_id, purchase_id),
        )

    def add_refund(self, purchase_id: int, amount_micros: int) -> bool:
        """Add to the refunded total unless it would pass the price. False if refused."""
        self.forget_rows("purchases")
        self._cur.execute(
            self._sql(
                "UPDATE purchases SET refunded_micros = refunded_micros + ?"
                " WHERE id = ? AND refunded_micros + ? <= price_micros"
            ),
            (amount_micros, purchase_id, amount_micros),
        )
        return self._cur.rowcount == 1

    def active_entitlement(
        self, merchant_id: int, customer_id: int, item_ref: str, now_us: int
    ) -> EntitlementRecord | None:
        row = self._one(
            f"SELECT {_ENTITLEMENT_COLUMNS} FROM entitlements WHERE merchant_id = ?"
            " AND customer_id = ? AND item_ref = ? AND revoked = ? AND starts_at_us <= ?"
            " AND (ends_at_us IS NULL OR ends_at_us > ?) ORDER BY starts_at_us DESC LIMIT 1",
            (merchant_id, customer_id, item_ref, False, now_us, now_us),
        )
        return None if row is None else _entitlement(row)

    def insert_entitlement(self, e: EntitlementRecord) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO entitlements ({_ENTITLEMENT_COLUMNS}) VALUES (?,?,?,?,?,?,?,?)"
            ),
            (
                e.id,
                e.merchant_id,
                e.customer_id,
                e.item_ref,
                e.purchase_id,
                e.starts_at_us,
                e.ends_at_us or None,
                e.revoked,
            ),
        )

    def revoke_entitlements(self, purchase_id: int) -> None:
        self._cur.execute(
            self._sql("UPDATE entitlements SET revoked = ? WHERE purchase_id = ?"),
            (True, purchase_id),
        )

    # --- processor charges -----------------------------------------------

    def insert_charge(self, c: ChargeRecord) -> None:
        self._cur.execute(
            self._sql(
                f"INSERT INTO charges ({_CHARGE_COLUMNS})"
                " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"
            ),
            (
                c.id,
                c.customer_id,
                c.purpose,
                c.client_key,
                c.request_hash,
                c.amount_micros,
                c.currency,
                c.fee_micros,
                c.schedule,
                c.status,
                c.processor_charge_id,
                c.decline_code,
                c.attempts,
                c.next_attempt_at_us or None,
                c.purchase_id or None,
                c.created_at_us,
                c.updated_at_us,
            ),
        )

    def get_charge(self, charge_id: int) -> ChargeRecord | None:
        row = self._one(f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE id = ?", (charge_id,))
        return None if row is None else _charge(row)

    def find_charge(self, customer_id: int, purpose: str, client_key: str) -> ChargeRecord | None:
        row = self._one(
            f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE customer_id = ? AND purpose = ?"
            " AND client_key = ?",
            (customer_id, purpose, client_key),
        )
        return None if row is None else _charge(row)

    def pending_charge(self, customer_id: int, purpose: str) -> ChargeRecord | None:
        row = self._one(
            f"SELECT {_CHARGE_COLUMNS} FROM charges WHERE customer_id = ? AND purpose = ?"
            " AND status = 'pending' ORDER BY created_at_us LIMIT 1",
            (customer_id, purpose),
        )
        return None if row is None else _charge(row)

    def finish_charge(
        self,
        charge_id: int,
        status: str,
        processor_charge_id: str,
        decline_code: str,
        now_us: int,
    ) -> bool:
        """Move a pending charge to its final status, once. False if it was final already."""
        self._cur.execute(
            self._sql(
                "UPDATE charges SET status = ?, processor_charge_id = ?, decline_code = ?,"
                " next_attempt_at_us = NULL, updated_at_us = ?"
                " WHERE id = ? AND status = 'pending'"
            ),
            (status, processor_charge_id, decline_code, now_us, charge_id),
        )
        return self._cur.rowcount == 1

    def reschedule_charge(
        self, charge_id: int, next_attempt_at_us: int, now_us: int, *, declined: bool
    ) -> None:
        """Try a pending charge again later; a decline counts an attempt (a new processor key)."""
        self._cur.execute(
            self._sql(
                "UPDATE charges SET attempts = attempts + ?, next_attempt_at_us = ?,"
                " decline_code = CASE WHEN ? THEN 'declined' ELSE decline_code END,"
                " updated_at_us = ? WHERE id = ? AND status = 'pending'"
            ),
            (1 if declined else 0, next_attempt_at_us, declined, now_us, charge_id),
        )

    def due_charges(self, now_us: int, limit: int) -> list[int]:
        rows = self._all(
            "SELECT id FROM charges WHERE status = 'pending' AND next_attempt_at_us <= ?"
            " ORDER BY next_attempt_at_us, id LIMIT ?",
            (now_us, limit),
        )
        return [row[0] for row in rows]

    def charges_for_reconcile(self) -> list[ChargeRecord]:
        return [_charge(r) for r in self._all(f"SELECT {_CHARGE_COLUMNS} FROM charges", ())]

    # --- refunds -----------------------------------------------------------

    def find_refund(self, purchase_id: int, idempotency_key: str) -> RefundRecord | None:
        row = self._one(
            f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE purchase_id = ? AND idempotency_key = ?",
            (purchase_id, idempotency_key),
        )
        return None if row is None else _refund(row)

    def get_refund(self, refund_id: int) -> RefundRecord | None:
        row = self._one(f"SELECT {_REFUND_COLUMNS} FROM refunds WHERE id = ?", (refund_id,))
        return None if row is None else _refund(row)

    def insert_refund(self, r: RefundRecord) -> None:
        self._cur.execute(
            self._sql(f"INSERT INTO refunds ({_REFUND_COLUMNS}) VALUES (?,?,?,?,?,?,?,?,?,?)"),
            (
                r.id,
                r.purchase_id,
                r.idempotency_key,
                r.request_hash,
                r.amount_micros,
                r.destination,
                r.status,
                r.transfer_id,
                r.processor_refund_id,
                r.created_at_us,
            ),
        )

    def finish_refund(self, refund_id: int, status: str, processor_refund_id: str) -> bool:
        self._cur.execute(
            self._sql(
                "UPDATE refunds SET status = ?, processor_refund_id = ? WHERE id = ?"
                " AND status = 'pending'"
            ),
            (status, processor_refund_id, refund_id),
        )
        return self._cur.rowcount == 1

    # --- ledger account settings ------------------------------------------

    def set_credit_limit(self, account_id: int, limit_micros: int) -> bool:
        """Change an account's credit limit; False if the account's usage is above it."""
        self._cur.execute(
            self._sql(
                "UPDATE accounts SET credit_limit_micros = ? WHERE id = ?"
                " AND debits_pending_micros + debits_posted_micros - credits_posted_micros <= ?"
            ),
            (limit_micros, account_id, limit_micros),
        )
        return self._cur.rowcount == 1
