"""Payees, platform fees, splits; recording sales and refund reversals; releasing held shares."""

from __future__ import annotations

import secrets
from collections.abc import Sequence
from dataclasses import replace

from micropay.core.currencies import is_currency
from micropay.payouts.plans import (
    Bucket,
    Payee,
    SaleRecord,
    SaleShare,
    Schedule,
    payee_accounts,
    release_transfer,
    reversal_plan,
    sale_plan,
)
from micropay.payouts.splits import PlatformFee, Share, check_shares, reverse_parts, split_sale
from micropay.service.billing.tips import TipPaid
from micropay.service.charges import LedgerInvariantError
from micropay.service.payouts.base import (
    PayoutsBase,
    PayoutsInputError,
    ReversalOutcome,
    ReversalStatus,
    SaleOutcome,
    SaleStatus,
    apply_plan,
    destination_token_chars_max,
    hold_s_default,
    hold_s_max,
    payout_threshold_micros_default,
    sale_currency,
    share_accounts,
    shares_per_release_max,
)
from micropay.service.ports import PaymentsWriteTx


class SalesMixin(PayoutsBase):
    """Setup (payees, fees, splits), sales and refunds, and releasing held shares."""

    # --- setup -------------------------------------------------------------

    def create_payee(
        self,
        name: str,
        currency: str,
        destination_token: str,
        *,
        schedule: Schedule = Schedule.weekly,
        threshold_micros: int = payout_threshold_micros_default,
        hold_s: int = hold_s_default,
    ) -> Payee:
        """A payee (unverified) with pending, available and deposits accounts in ``currency``."""
        if not isinstance(name, str) or not 0 < len(name) <= 200:
            raise PayoutsInputError("payee name must be 1-200 characters")
        if not is_currency(currency):
            raise PayoutsInputError(f"unknown currency {currency!r}")
        if (
            not isinstance(destination_token, str)
            or not 0 < len(destination_token) <= destination_token_chars_max
            or not destination_token.isprintable()
        ):
            raise PayoutsInputError("destination token must be 1-255 printable characters")
        if not isinstance(schedule, Schedule):
            raise PayoutsInputError("schedule must be a Schedule")
        if type(threshold_micros) is not int or threshold_micros <= 0:
            raise PayoutsInputError("threshold must be an int of micros > 0")
        if type(hold_s) is not int or not 0 <= hold_s <= hold_s_max:
            raise PayoutsInputError("hold must be 0..366 days in seconds")
        self.payments.open_platform(currency)
        draft = Payee(
            0,
            f"pay_{secrets.token_hex(8)}",
            name,
            currency,
            destination_token,
            False,
            schedule,
            threshold_micros,
            hold_s,
        )

        def create(tx: PaymentsWriteTx) -> Payee:
            payee_id = self.bind(tx).insert_payee(draft, self.clock())
            self.payments._open_in(tx, payee_accounts(payee_id, currency))
            return replace(draft, id=payee_id)

        return self.tx(create)

    def set_platform_fee(self, merchant_id: int, fee: PlatformFee) -> None:
        if not isinstance(fee, PlatformFee):
            raise PayoutsInputError("fee must be a PlatformFee")

        def write(tx: PaymentsWriteTx) -> None:
            if tx.get_merchant(merchant_id) is None:
                raise PayoutsInputError("unknown merchant")
            self.bind(tx).set_platform_fee(merchant_id, fee)

        self.tx(write)

    def set_split(self, merchant_id: int, item_ref: str, shares: Sequence[Share]) -> None:
        """Who shares an item's proceeds after the platform fee (basis points summing to 10,000)."""
        shares = list(shares)
        reason = check_shares(shares)
        if reason:
            raise PayoutsInputError(reason)

        def write(tx: PaymentsWriteTx) -> None:
            sql = self.bind(tx)
            merchant = tx.get_merchant(merchant_id)
            if merchant is None:
                raise PayoutsInputError("unknown merchant")
            if tx.get_item(merchant_id, item_ref) is None:
                raise PayoutsInputError("unknown item")
            for share in shares:
                payee = sql.get_payee(share.payee_id)
                if payee is None:
                    raise PayoutsInputError(f"unknown payee {share.payee_id}")
                if payee.currency != merchant.currency:
                    raise PayoutsInputError(f"payee {payee.id} is paid in {payee.currency}")
            sql.set_split(merchant_id, item_ref, shares)

        self.tx(write)

    # --- sales and refunds ----------------------------------------------------

    def record_sale(self, purchase_id: int) -> SaleOutcome:
        """Split a paid purchase's proceeds: platform fee, then payees' pending. Once per purchase.

        Proposed hook: call ``_record_sale_in(tx, purchase_id)`` in the purchase's
        own transaction (``Payments._purchase_in`` and ``ChargeEngine._post_success``).
        """
        return self.tx(lambda tx: self._record_sale_in(tx, purchase_id))

    def _record_sale_in(self, tx: PaymentsWriteTx, purchase_id: int) -> SaleOutcome:
        sql = self.bind(tx)
        if sql.get_sale(purchase_id) is not None:
            return SaleOutcome(SaleStatus.already_recorded)
        purchase = tx.get_purchase(purchase_id)
        if purchase is None:
            return SaleOutcome(SaleStatus.purchase_not_found)
        if purchase.status != "ok":
            return SaleOutcome(SaleStatus.purchase_not_paid)
        if purchase.refunded_micros:
            return SaleOutcome(SaleStatus.purchase_refunded)
        return self._split_in(
            tx,
            purchase_id,
            purchase.merchant_id,
            purchase.currency,
            purchase.price_micros,
            purchase.item_ref,
            f"sale:{purchase_id}",
        )

    def _record_tip_in(self, tx: PaymentsWriteTx, tip: TipPaid) -> SaleOutcome:
        """The tip hook: a tip for an item is split exactly like that item's sales.

        Same split, platform fee, allocation, holding period and payee balances;
        the sale row is keyed by the tip's id (``sales.tip_id`` says it is a tip).
        A tip for nothing in particular, or for an item without a split, stays
        the merchant's (``no_split``). Runs in the tip's transaction, once per tip.
        """
        if tip.item_ref is None:
            return SaleOutcome(SaleStatus.no_split)
        if self.bind(tx).get_sale(tip.tip_id) is not None:
            return SaleOutcome(SaleStatus.already_recorded)
        return self._split_in(
            tx,
            tip.tip_id,
            tip.merchant_id,
            tip.currency,
            tip.amount_micros,
            tip.item_ref,
            f"tip:{tip.tip_id}",
            tip_id=tip.tip_id,
        )

    def _split_in(
        self,
        tx: PaymentsWriteTx,
        sale_id: int,
        merchant_id: int,
        currency: str,
        gross_micros: int,
        item_ref: str,
        reference: str,
        *,
        tip_id: int | None = None,
    ) -> SaleOutcome:
        """Record one sale (a purchase, or a tip when ``tip_id``): fee, payees' pending shares."""
        sql = self.bind(tx)
        shares = sql.get_split(merchant_id, item_ref)
        if not shares:
            return SaleOutcome(SaleStatus.no_split)
        fee = sql.get_platform_fee(merchant_id) or PlatformFee()
        split = split_sale(gross_micros, fee, shares)
        now_us = self.clock()
        ids = [self.new_id() for _ in range(len(shares) + 1)]
        plan = sale_plan(ids, merchant_id, currency, split, reference)
        apply_plan(tx, plan, now_us, reference)
        rows = []
        for position, (payee_id, amount) in enumerate(split.payee_parts):
            payee = sql.get_payee(payee_id)
            if payee is None:
                raise LedgerInvariantError(f"split names missing payee {payee_id}")
            rows.append(
                SaleShare(
                    sale_id,
                    payee_id,
                    position,
                    amount,
                    0,
                    now_us + payee.hold_s * 1_000_000,
                    False,
                )
            )
        sql.insert_sale(
            SaleRecord(
                sale_id,
                merchant_id,
                currency,
                split.gross_micros,
                split.fee_micros,
                0,
                0,
                now_us,
            ),
            rows,
            tip_id=tip_id,
        )
        return SaleOutcome(SaleStatus.ok, split.fee_micros, split.payee_parts)

    def on_refund(self, refund_id: int) -> ReversalOutcome:
        """Take a settled refund back from the fee and the payees' shares. Once per refund.

        Proposed hook: call ``_on_refund_in`` where ``RefundService`` posts a refund.
        """
        return self.tx(lambda tx: self._on_refund_in(tx, refund_id))

    def _on_refund_in(self, tx: PaymentsWriteTx, refund_id: int) -> ReversalOutcome:
        sql = self.bind(tx)
        refund = tx.get_refund(refund_id)
        if refund is None:
            return ReversalOutcome(ReversalStatus.refund_not_found)
        if refund.status != "succeeded":
            return ReversalOutcome(ReversalStatus.refund_not_settled)
        sale = sql.get_sale(refund.purchase_id)
        if sale is None:
            return ReversalOutcome(ReversalStatus.no_sale)
        now_us = self.clock()
        if not sql.insert_reversal(refund_id, sale.purchase_id, refund.amount_micros, now_us):
            return ReversalOutcome(ReversalStatus.already_reversed)
        # Lock the payees' accounts before reading shares, so a concurrent release
        # either happened entirely before (we see released) or waits for us.
        shares = sql.sale_shares(sale.purchase_id)
        tx.lock_accounts(share_accounts(shares, sale.currency))
        shares = sql.sale_shares(sale.purchase_id)
        remaining = [sale.fee_micros - sale.fee_reversed_micros] + [
            s.amount_micros - s.reversed_micros for s in shares
        ]
        parts = reverse_parts(refund.amount_micros, remaining)
        fee_back = parts[0]
        if not sql.add_sale_reversal(sale.purchase_id, refund.amount_micros, fee_back):
            raise LedgerInvariantError(f"refund {refund_id} exceeds sale {sale.purchase_id}")
        taken: list[tuple[int, Bucket, int]] = []
        for share, amount in zip(shares, parts[1:], strict=True):
            if amount and not sql.add_share_reversed(sale.purchase_id, share.payee_id, amount):
                raise LedgerInvariantError(f"reversal exceeds share of payee {share.payee_id}")
            bucket = Bucket.available if share.released else Bucket.pending
            taken.append((share.payee_id, bucket, amount))
        ids = [self.new_id() for _ in range(len(parts))]
        plan = reversal_plan(
            ids, sale.merchant_id, sale.currency, fee_back, taken, f"refund:{refund_id}"
        )
        apply_plan(tx, plan, now_us, f"reversal of refund {refund_id}")
        return ReversalOutcome(ReversalStatus.ok, fee_back, tuple(taken))

    def release_due(self, limit: int = shares_per_release_max) -> int:
        """Move every share whose holding period has ended from pending to available."""
        now_us = self.clock()
        limit = min(limit, shares_per_release_max)

        def release(tx: PaymentsWriteTx) -> int:
            sql = self.bind(tx)
            due = sql.due_shares(now_us, limit)
            if not due:
                return 0
            currencies = {s.purchase_id: sale_currency(sql, s.purchase_id) for s in due}
            ids = sorted({a for s in due for a in share_accounts([s], currencies[s.purchase_id])})
            tx.lock_accounts(ids)
            plan = []
            for share in due:
                remains = sql.mark_share_released(share.purchase_id, share.payee_id)
                if remains:
                    plan.append(
                        release_transfer(
                            self.new_id(),
                            share.payee_id,
                            remains,
                            currencies[share.purchase_id],
                            f"sale:{share.purchase_id}",
                        )
                    )
            apply_plan(tx, plan, now_us, "release")
            return len(plan)

        return self.tx(release)
