"""Refunds: full or partial, to the wallet, to the tab, or to the card.

The refunded total of a purchase never exceeds its price, even under
concurrent requests: the total is raised with a guarded UPDATE in the same
transaction as the ledger transfer, and the database checks it again.
A refund to a card asks the processor first (with an idempotency key) and
posts to the ledger only when the processor has refunded; a decline gives the
reserved amount back.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from micropay.core.money import Rounding, to_minor_units
from micropay.payments.models import FundingSource, is_valid_key
from micropay.payments.plans import refund_to_funding
from micropay.payments.processor import Outcome, RefundRequest
from micropay.payments.records import RefundRecord
from micropay.service.charges import ChargeEngine, LedgerInvariantError, request_hash
from micropay.service.ledger import apply_in_transaction
from micropay.service.ports import PaymentsWriteTx


class RefundStatus(enum.Enum):
    ok = "ok"
    pending = "pending"  # the processor did not answer; retry the same request
    purchase_not_found = "purchase_not_found"
    purchase_not_paid = "purchase_not_paid"
    amount_invalid = "amount_invalid"
    exceeds_refundable = "exceeds_refundable"
    destination_invalid = "destination_invalid"
    idempotency_key_invalid = "idempotency_key_invalid"
    idempotency_key_reused = "idempotency_key_reused"
    declined = "declined"


DESTINATIONS = ("original", "wallet")


@dataclass(frozen=True, slots=True)
class RefundReceipt:
    status: RefundStatus
    refund_id: int = 0
    amount_micros: int = 0
    destination: str = ""
    replayed: bool = False


@dataclass(frozen=True, slots=True)
class _CardRefund:
    refund_id: int
    processor_charge_id: str
    amount_minor: int
    currency: str


class RefundService:
    def __init__(self, charges: ChargeEngine) -> None:
        self.charges = charges
        # Called with (tx, refund id) in the transaction that settles a refund.
        self.refund_hooks: list[Callable[[PaymentsWriteTx, int], object]] = []

    def _run_refund_hooks(self, tx: PaymentsWriteTx, refund_id: int) -> None:
        for hook in self.refund_hooks:
            hook(tx, refund_id)

    def refund(
        self,
        purchase_id: int,
        amount_micros: int,
        idempotency_key: str,
        *,
        destination: str = "original",
    ) -> RefundReceipt:
        if not is_valid_key(idempotency_key):
            return RefundReceipt(RefundStatus.idempotency_key_invalid)
        if type(amount_micros) is not int or amount_micros <= 0:
            return RefundReceipt(RefundStatus.amount_invalid)
        if destination not in DESTINATIONS:
            return RefundReceipt(RefundStatus.destination_invalid)
        fingerprint = request_hash("refund", purchase_id, amount_micros, destination)
        step = self.charges.tx(
            lambda tx: self._refund_in(
                tx, purchase_id, amount_micros, idempotency_key, destination, fingerprint
            )
        )
        if isinstance(step, RefundReceipt):
            return step
        return self._refund_card(step)

    def _refund_in(
        self,
        tx: PaymentsWriteTx,
        purchase_id: int,
        amount_micros: int,
        key: str,
        destination: str,
        fingerprint: str,
    ) -> RefundReceipt | _CardRefund:
        existing = tx.find_refund(purchase_id, key)
        if existing is not None:
            if existing.request_hash != fingerprint:
                return RefundReceipt(RefundStatus.idempotency_key_reused)
            return RefundReceipt(
                RefundStatus(existing.status if existing.status != "succeeded" else "ok"),
                existing.id,
                existing.amount_micros,
                existing.destination,
                True,
            )
        purchase = tx.get_purchase(purchase_id)
        if purchase is None:
            return RefundReceipt(RefundStatus.purchase_not_found)
        if purchase.status != "ok":
            return RefundReceipt(RefundStatus.purchase_not_paid)
        to_card = destination == "original" and purchase.funding is FundingSource.direct
        if to_card:
            exponent = self.charges.processor.minor_exponent(purchase.currency)
            minor, remainder = to_minor_units(amount_micros, exponent, Rounding.DOWN)
            if remainder:
                return RefundReceipt(RefundStatus.amount_invalid)
        if not tx.add_refund(purchase.id, amount_micros):
            return RefundReceipt(RefundStatus.exceeds_refundable)
        now_us = self.charges.clock()
        refund_id = self.charges.new_id()
        if to_card:
            charge = tx.get_charge(purchase.charge_id or 0)
            if charge is None or not charge.processor_charge_id:
                raise LedgerInvariantError(f"paid direct purchase {purchase.id} has no charge")
            tx.insert_refund(
                RefundRecord(
                    refund_id,
                    purchase.id,
                    key,
                    fingerprint,
                    amount_micros,
                    "card",
                    "pending",
                    None,
                    "",
                    now_us,
                )
            )
            return _CardRefund(refund_id, charge.processor_charge_id, minor, purchase.currency)
        source = FundingSource.wallet if destination == "wallet" else purchase.funding
        if source is FundingSource.direct:
            source = FundingSource.wallet
        transfer = refund_to_funding(
            self.charges.new_id(),
            source,
            purchase.customer_id,
            purchase.merchant_id,
            amount_micros,
            purchase.currency,
            reference=f"refund:{refund_id}",
        )
        [result] = apply_in_transaction(tx, [transfer], now_us)
        if not result.ok:
            raise LedgerInvariantError(f"refund transfer refused: {result.status.value}")
        tx.insert_refund(
            RefundRecord(
                refund_id,
                purchase.id,
                key,
                fingerprint,
                amount_micros,
                source.value,
                "succeeded",
                transfer.id,
                "",
                now_us,
            )
        )
        self._revoke_if_fully_refunded(tx, purchase.id)
        self._run_refund_hooks(tx, refund_id)
        return RefundReceipt(RefundStatus.ok, refund_id, amount_micros, source.value)

    def _refund_card(self, step: _CardRefund) -> RefundReceipt:
        result = self.charges.processor.refund(
            RefundRequest(
                idempotency_key=f"micropay-refund-{step.refund_id}",
                charge_id=step.processor_charge_id,
                amount_minor=step.amount_minor,
                currency=step.currency,
            )
        )

        def record(tx: PaymentsWriteTx) -> RefundReceipt:
            refund = _get_refund(tx, step.refund_id)
            if result.outcome is Outcome.retry:
                return RefundReceipt(RefundStatus.pending, refund.id, refund.amount_micros, "card")
            if result.outcome is Outcome.declined:
                if tx.finish_refund(refund.id, "declined", ""):
                    tx.add_refund(refund.purchase_id, -refund.amount_micros)
                return RefundReceipt(RefundStatus.declined, refund.id, refund.amount_micros, "card")
            if tx.finish_refund(refund.id, "succeeded", result.refund_id):
                purchase = tx.get_purchase(refund.purchase_id)
                if purchase is None:
                    raise LedgerInvariantError("refunded purchase vanished")
                transfer = refund_to_funding(
                    self.charges.new_id(),
                    FundingSource.direct,
                    purchase.customer_id,
                    purchase.merchant_id,
                    refund.amount_micros,
                    purchase.currency,
                    reference=f"refund:{refund.id}",
                )
                [posted] = apply_in_transaction(tx, [transfer], self.charges.clock())
                if not posted.ok:
                    raise LedgerInvariantError(f"card refund refused: {posted.status.value}")
                self._revoke_if_fully_refunded(tx, purchase.id)
                self._run_refund_hooks(tx, refund.id)
            return RefundReceipt(RefundStatus.ok, refund.id, refund.amount_micros, "card")

        return self.charges.tx(record)

    def _revoke_if_fully_refunded(self, tx: PaymentsWriteTx, purchase_id: int) -> None:
        purchase = tx.get_purchase(purchase_id)
        if purchase is not None and purchase.refunded_micros >= purchase.price_micros:
            tx.revoke_entitlements(purchase_id)


def _get_refund(tx: PaymentsWriteTx, refund_id: int) -> RefundRecord:
    row = tx.get_refund(refund_id)
    if row is None:
        raise LedgerInvariantError(f"refund {refund_id} vanished")
    return row
