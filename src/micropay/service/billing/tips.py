"""Tips and donations: a customer-chosen amount within the merchant's limits.

A tip may name what it is for (``item_ref``: a creator's page, an article of
the merchant's catalogue). The tip's hooks (:attr:`Tips.tip_hooks`, shared by
every ``Tips`` over the same :class:`Payments`) run in the tip's own
transaction, so whatever they record (``Payouts(..., attach=True)`` splits a
tip for an item like that item's sales) commits with the tip or not at all.
"""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass

from micropay.payments.billing import (
    BillingCode,
    TipLimits,
    TipRecord,
    TipStatus,
    note_valid,
    tip_limits_valid,
    tip_refusal,
)
from micropay.payments.models import (
    FundingSource,
    PurchaseStatus,
    is_valid_key,
    item_ref_chars_max,
)
from micropay.service.billing._base import (
    _SETTLE,
    BillingTx,
    _Base,
    _Payment,
    _SettleTabFirst,
)
from micropay.service.charges import request_hash
from micropay.service.payments import Payments, PaymentsInputError

# --- tips -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TipReceipt:
    """A tip's outcome."""

    status: TipStatus
    tip_id: int = 0
    amount_micros: int = 0
    currency: str = ""
    funding: FundingSource | None = None
    transfer_id: int = 0
    message: str = ""
    replayed: bool = False
    item_ref: str | None = None

    @property
    def ok(self) -> bool:
        return self.status is TipStatus.ok


@dataclass(frozen=True, slots=True)
class TipPaid:
    """What a tip hook is told: a tip just written, in the transaction that wrote it."""

    tip_id: int
    merchant_id: int
    customer_id: int
    amount_micros: int
    currency: str
    item_ref: str | None  # what the tip is for, if anything
    transfer_id: int  # the tip's transfer to the merchant's payable


TipHook = Callable[[BillingTx, TipPaid], object]
_tip_hooks: weakref.WeakKeyDictionary[Payments, list[TipHook]] = weakref.WeakKeyDictionary()


def tip_hooks(payments: Payments) -> list[TipHook]:
    """The hooks every tip made over ``payments`` runs in its own transaction (one list)."""
    hooks = _tip_hooks.get(payments)
    if hooks is None:
        hooks = _tip_hooks.setdefault(payments, [])
    return hooks


def _tip_receipt(t: TipRecord, item_ref: str | None, *, replayed: bool) -> TipReceipt:
    return TipReceipt(
        TipStatus.ok,
        t.id,
        t.amount_micros,
        t.currency,
        FundingSource(t.funding),
        t.transfer_id,
        "",
        replayed,
        item_ref,
    )


def _item_ref_valid(item_ref: object) -> bool:
    return item_ref is None or (
        isinstance(item_ref, str) and 0 < len(item_ref) <= item_ref_chars_max
    )


class Tips(_Base):
    """Tips. ``tip_hooks`` (like ``Payments.sale_hooks``) is one list per :class:`Payments`:
    a hook appended through any ``Tips`` runs for the tips of every ``Tips`` over it."""

    def __init__(self, payments: Payments) -> None:
        super().__init__(payments)
        self.tip_hooks = tip_hooks(payments)

    def set_limits(self, merchant_id: int, tip_micros_min: int, tip_micros_max: int) -> TipLimits:
        """Set a merchant's tip range (raises ``PaymentsInputError`` on bad input)."""
        tip_limits = TipLimits(tip_micros_min, tip_micros_max)
        if not tip_limits_valid(tip_limits):
            raise PaymentsInputError("tip limits must be ints with 1 <= min <= max <= 10,000 units")

        def store(tx: BillingTx) -> TipLimits:
            if tx.get_merchant(merchant_id) is None:
                raise PaymentsInputError("unknown merchant")
            tx.set_tip_limits(merchant_id, tip_limits)
            return tip_limits

        return self._tx(store)

    def limits_for(self, merchant_id: int) -> TipLimits:
        return self._tx(lambda tx: tx.get_tip_limits(merchant_id)) or TipLimits()

    def tip(
        self,
        merchant_id: int,
        customer_id: int,
        amount_micros: int,
        idempotency_key: str,
        note: str = "",
        *,
        item_ref: str | None = None,
    ) -> TipReceipt:
        """Tip ``amount_micros`` from the wallet or tab. Idempotent per (merchant, key).

        ``item_ref`` names what the tip is for (one of the merchant's items);
        with ``Payouts(..., attach=True)`` a tip for an item with a revenue split
        is split like that item's sales, in the tip's transaction. Without an
        item (or for an item without a split) the tip stays the merchant's.

        Outcomes: ``ok`` (a receipt; ``replayed`` on a retry), or a refusal that
        writes nothing: bad key, note or amount, outside the merchant's limits,
        unknown merchant/customer/item,
        other currency, key reused for a different tip, no prepaid source,
        frozen tab, insufficient funds.
        """
        if not is_valid_key(idempotency_key):
            return TipReceipt(TipStatus.idempotency_key_invalid)
        if not note_valid(note):
            return TipReceipt(
                TipStatus.note_invalid, message="a note is at most 280 printable characters"
            )
        if type(amount_micros) is not int or amount_micros <= 0:
            return TipReceipt(TipStatus.amount_invalid)
        if not _item_ref_valid(item_ref):
            return TipReceipt(TipStatus.item_not_found, message="item not found")
        # A tip without an item keeps the fingerprint tips had before items existed.
        fingerprint = (
            request_hash("tip", merchant_id, customer_id, amount_micros, note)
            if item_ref is None
            else request_hash("tip", merchant_id, customer_id, amount_micros, note, item_ref)
        )

        def attempt(settled: bool) -> TipReceipt | _SettleTabFirst:
            return self._tx(
                lambda tx: self._tip_in(
                    tx,
                    merchant_id,
                    customer_id,
                    amount_micros,
                    idempotency_key,
                    note,
                    item_ref,
                    fingerprint,
                    settled,
                )
            )

        return self._with_settlement(customer_id, attempt)

    def _tip_in(
        self,
        tx: BillingTx,
        merchant_id: int,
        customer_id: int,
        amount_micros: int,
        key: str,
        note: str,
        item_ref: str | None,
        fingerprint: str,
        settled: bool,
    ) -> TipReceipt | _SettleTabFirst:
        merchant = tx.get_merchant(merchant_id)
        if merchant is None:
            return TipReceipt(TipStatus.merchant_not_found)
        existing = tx.find_tip(merchant_id, key)
        if existing is not None:
            if existing.request_hash != fingerprint:
                return TipReceipt(
                    TipStatus.idempotency_key_reused, message="this key was used for another tip"
                )
            return _tip_receipt(existing, item_ref, replayed=True)
        customer = tx.get_customer(customer_id)
        if customer is None:
            return TipReceipt(TipStatus.customer_not_found)
        if customer.currency != merchant.currency:
            return TipReceipt(TipStatus.currency_not_sold, currency=merchant.currency)
        if item_ref is not None and tx.get_item(merchant_id, item_ref) is None:
            return TipReceipt(TipStatus.item_not_found, message="item not found")
        tip_limits = tx.get_tip_limits(merchant_id) or TipLimits()
        refusal = tip_refusal(amount_micros, tip_limits)
        if refusal is not None:
            return TipReceipt(
                refusal,
                message=f"a tip is between {tip_limits.tip_micros_min} and"
                f" {tip_limits.tip_micros_max} micros",
            )
        payment = self._choose(tx, merchant, customer, amount_micros, settlable=not settled)
        if payment.settle_tab:
            return _SETTLE
        if payment.source is None:
            return TipReceipt(_tip_refusal(payment), message=payment.message)
        tip_id = self.payments.new_id()
        transfer_id = self._pay(
            tx,
            payment.source,
            merchant_id,
            customer,
            amount_micros,
            BillingCode.tip,
            f"tip:{tip_id}",
        )
        record = TipRecord(
            tip_id,
            merchant_id,
            customer_id,
            amount_micros,
            customer.currency,
            payment.source.value,
            transfer_id,
            note,
            key,
            fingerprint,
            self.payments.clock(),
        )
        tx.insert_tip(record, item_ref or "")
        paid = TipPaid(
            tip_id,
            merchant_id,
            customer_id,
            amount_micros,
            customer.currency,
            item_ref,
            transfer_id,
        )
        for hook in self.tip_hooks:
            hook(tx, paid)
        return _tip_receipt(record, item_ref, replayed=False)


def _tip_refusal(payment: _Payment) -> TipStatus:
    if payment.refusal is None:
        return TipStatus.no_prepaid_source
    if payment.refusal is PurchaseStatus.tab_frozen:
        return TipStatus.tab_frozen
    return TipStatus.insufficient_funds
