"""Subscriptions: a period price, renewal exactly once per period, cancel at period end."""

from __future__ import annotations

from dataclasses import dataclass, replace

from micropay.payments.billing import (
    BillingCode,
    BillingPeriod,
    PaidPeriod,
    Period,
    Plan,
    SubscriptionRecord,
    SubscriptionState,
    SubscriptionStatus,
    billing_period,
    is_valid_ref,
    local_date,
    period_number_at,
    plan_ref_chars_max,
    subscriptions_per_renewal_run_max,
    zone,
)
from micropay.payments.models import (
    Customer,
    FundingSource,
    PurchaseStatus,
    is_valid_key,
    is_valid_price,
    name_chars_max,
)
from micropay.payments.records import EntitlementRecord, PurchaseRecord
from micropay.service.billing._base import (
    _SETTLE,
    BillingTx,
    _Base,
    _lock,
    _Payment,
    _SettleTabFirst,
)
from micropay.service.charges import LedgerInvariantError, request_hash
from micropay.service.payments import PaymentsInputError
from micropay.service.ports import TransientStoreError

# --- subscriptions ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SubscriptionReceipt:
    status: SubscriptionStatus
    subscription_id: int = 0
    state: SubscriptionState | None = None
    period_number: int = 0
    period_starts_at_us: int = 0
    period_ends_at_us: int = 0
    funding: FundingSource | None = None
    price_micros: int = 0
    message: str = ""
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status is SubscriptionStatus.ok


@dataclass(frozen=True, slots=True)
class RenewalOutcome:
    subscription_id: int
    state: SubscriptionState
    period_number: int
    message: str = ""


def _sub_receipt(s: SubscriptionRecord, *, replayed: bool = False) -> SubscriptionReceipt:
    return SubscriptionReceipt(
        SubscriptionStatus.ok,
        s.id,
        s.state,
        s.period_number,
        s.period_starts_at_us,
        s.period_ends_at_us,
        None,
        s.price_micros,
        "",
        replayed,
    )


class Subscriptions(_Base):
    def set_plan(
        self, merchant_id: int, plan_ref: str, name: str, period: Period, price_micros: int
    ) -> Plan:
        """Create or change a plan (new prices apply to new subscriptions). Raises on bad input."""
        if not is_valid_ref(plan_ref, plan_ref_chars_max):
            raise PaymentsInputError("plan_ref must be 1-128 printable ASCII characters")
        if not isinstance(name, str) or not 0 < len(name) <= name_chars_max:
            raise PaymentsInputError("plan name must be 1-200 characters")
        if not isinstance(period, Period):
            raise PaymentsInputError("period must be daily, weekly, monthly or yearly")
        if not is_valid_price(price_micros):
            raise PaymentsInputError("price must be an int of micros, > 0 and <= 10,000 units")

        def store(tx: BillingTx) -> Plan:
            merchant = tx.get_merchant(merchant_id)
            if merchant is None:
                raise PaymentsInputError("unknown merchant")
            plan = Plan(merchant_id, plan_ref, name, period, price_micros, merchant.currency)
            tx.upsert_plan(plan)
            return plan

        return self._tx(store)

    def subscribe(
        self,
        merchant_id: int,
        customer_id: int,
        plan_ref: str,
        idempotency_key: str,
        *,
        time_zone: str = "UTC",
    ) -> SubscriptionReceipt:
        """Start a subscription and pay its first period (from local midnight today).

        Idempotent per (merchant, key). Refusals write nothing.
        """
        if not is_valid_key(idempotency_key):
            return SubscriptionReceipt(SubscriptionStatus.idempotency_key_invalid)
        tz = zone(time_zone)
        if tz is None:
            return SubscriptionReceipt(SubscriptionStatus.time_zone_invalid)
        fingerprint = request_hash("subscribe", merchant_id, customer_id, plan_ref, time_zone)

        def attempt(settled: bool) -> SubscriptionReceipt | _SettleTabFirst:
            return self._tx(
                lambda tx: self._subscribe_in(
                    tx,
                    merchant_id,
                    customer_id,
                    plan_ref,
                    idempotency_key,
                    time_zone,
                    fingerprint,
                    settled,
                )
            )

        return self._with_settlement(customer_id, attempt)

    def _subscribe_in(
        self,
        tx: BillingTx,
        merchant_id: int,
        customer_id: int,
        plan_ref: str,
        key: str,
        time_zone: str,
        fingerprint: str,
        settled: bool,
    ) -> SubscriptionReceipt | _SettleTabFirst:
        merchant = tx.get_merchant(merchant_id)
        if merchant is None:
            return SubscriptionReceipt(SubscriptionStatus.merchant_not_found)
        existing = tx.find_subscription(merchant_id, key)
        if existing is not None:
            if existing.request_hash != fingerprint:
                return SubscriptionReceipt(SubscriptionStatus.idempotency_key_reused)
            return _sub_receipt(existing, replayed=True)
        customer = tx.get_customer(customer_id)
        if customer is None:
            return SubscriptionReceipt(SubscriptionStatus.customer_not_found)
        plan = tx.get_plan(merchant_id, plan_ref) if isinstance(plan_ref, str) else None
        if plan is None:
            return SubscriptionReceipt(SubscriptionStatus.plan_not_found)
        if customer.currency != plan.currency:
            return SubscriptionReceipt(SubscriptionStatus.currency_not_sold)
        tz = zone(time_zone)
        if tz is None:
            return SubscriptionReceipt(SubscriptionStatus.time_zone_invalid)
        now_us = self.payments.clock()
        anchor = local_date(now_us, tz)
        first = billing_period(anchor, plan.period, 0, tz)
        payment = self._choose(tx, merchant, customer, plan.price_micros, settlable=not settled)
        if payment.settle_tab:
            return _SETTLE
        if payment.source is None:
            return SubscriptionReceipt(_sub_refusal(payment), message=payment.message)
        subscription = SubscriptionRecord(
            self.payments.new_id(),
            merchant_id,
            customer_id,
            plan_ref,
            plan.period,
            plan.price_micros,
            plan.currency,
            time_zone,
            anchor,
            0,
            first.starts_at_us,
            first.ends_at_us,
            SubscriptionState.active,
            False,
            key,
            fingerprint,
            now_us,
            now_us,
        )
        tx.insert_subscription(subscription)
        self._pay_period(tx, subscription, customer, payment.source, first, now_us)
        return replace_funding(_sub_receipt(subscription), payment.source)

    def _pay_period(
        self,
        tx: BillingTx,
        s: SubscriptionRecord,
        customer: Customer,
        source: FundingSource,
        period: BillingPeriod,
        now_us: int,
    ) -> None:
        """The period's transfer, a purchase row with its entitlement, and the paid period."""
        reference = f"subscription:{s.id}:{period.number}"
        transfer_id = self._pay(
            tx, source, s.merchant_id, customer, s.price_micros, BillingCode.subscription, reference
        )
        purchase_id = self.payments.new_id()
        tx.insert_purchase(
            PurchaseRecord(
                purchase_id,
                s.merchant_id,
                s.customer_id,
                s.plan_ref,
                s.price_micros,
                s.currency,
                source,
                PurchaseStatus.ok.value,
                transfer_id,
                None,
                reference,
                request_hash(reference),
                0,
                now_us,
            )
        )
        tx.insert_entitlement(
            EntitlementRecord(
                self.payments.new_id(),
                s.merchant_id,
                s.customer_id,
                s.plan_ref,
                purchase_id,
                period.starts_at_us,
                period.ends_at_us,
                False,
            )
        )
        tx.insert_paid_period(
            PaidPeriod(
                self.payments.new_id(),
                s.id,
                period.number,
                period.starts_at_us,
                period.ends_at_us,
                purchase_id,
                transfer_id,
                now_us,
            )
        )

    def renew_due(
        self, now_us: int | None = None, *, limit: int = subscriptions_per_renewal_run_max
    ) -> list[RenewalOutcome]:
        """Renew every subscription whose paid period has ended, once per period.

        The new period is the one containing ``now`` (normally the next one;
        after a long outage the missed periods are skipped, never charged).
        Set-to-cancel subscriptions end instead; unpayable ones go ``past_due``.
        """
        at_us = self.payments.clock() if now_us is None else now_us
        due = self._tx(
            lambda tx: tx.due_subscriptions(at_us, min(limit, subscriptions_per_renewal_run_max))
        )
        outcomes = []
        for subscription_id in due:
            outcome = self._renew(subscription_id, at_us)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def _renew(self, subscription_id: int, at_us: int) -> RenewalOutcome | None:
        outcome = self._tx(lambda tx: self._renew_in(tx, subscription_id, at_us, False))
        if isinstance(outcome, _SettleTabFirst):
            sub = self._tx(lambda tx: tx.get_subscription(subscription_id))
            if sub is None:
                return None
            self.payments.charges.settle_tab(sub.customer_id, forced=True)
            outcome = self._tx(lambda tx: self._renew_in(tx, subscription_id, at_us, True))
        if isinstance(outcome, _SettleTabFirst):
            raise LedgerInvariantError("tab settlement asked for twice")
        return outcome

    def _renew_in(
        self, tx: BillingTx, subscription_id: int, at_us: int, settled: bool
    ) -> RenewalOutcome | _SettleTabFirst | None:
        first_look = tx.get_subscription(subscription_id)
        if first_look is None:
            return None
        customer = tx.get_customer(first_look.customer_id)
        merchant = tx.get_merchant(first_look.merchant_id)
        if customer is None or merchant is None:
            raise LedgerInvariantError(f"subscription {subscription_id} lost its parties")
        _lock(tx, merchant.id, customer)  # serializes renewals of this customer
        sub = tx.get_subscription(subscription_id)  # read again, under the lock
        now_us = self.payments.clock()
        if sub is None or sub.state is SubscriptionState.cancelled or sub.period_ends_at_us > at_us:
            return None  # renewed or ended by someone else
        if sub.cancel_at_period_end:
            if not tx.set_subscription_state(
                sub.id, sub.period_number, SubscriptionState.cancelled, now_us
            ):
                raise TransientStoreError("subscription changed concurrently")
            return RenewalOutcome(sub.id, SubscriptionState.cancelled, sub.period_number)
        tz = zone(sub.time_zone)
        if tz is None:
            raise LedgerInvariantError(f"subscription {sub.id} has an unknown time zone")
        number = max(
            sub.period_number + 1, period_number_at(sub.anchor_date, sub.period, tz, at_us)
        )
        period = billing_period(sub.anchor_date, sub.period, number, tz)
        payment = self._choose(tx, merchant, customer, sub.price_micros, settlable=not settled)
        if payment.settle_tab:
            return _SETTLE
        if payment.source is None:
            if sub.state is not SubscriptionState.past_due and not tx.set_subscription_state(
                sub.id, sub.period_number, SubscriptionState.past_due, now_us
            ):
                raise TransientStoreError("subscription changed concurrently")
            return RenewalOutcome(
                sub.id, SubscriptionState.past_due, sub.period_number, _sub_refusal(payment).value
            )
        self._pay_period(tx, sub, customer, payment.source, period, now_us)
        if not tx.advance_subscription(
            sub.id, sub.period_number, number, period.starts_at_us, period.ends_at_us, now_us
        ):
            # Cancelled or renewed meanwhile: roll this payment back and look again.
            raise TransientStoreError("subscription changed concurrently")
        return RenewalOutcome(sub.id, SubscriptionState.active, number)

    def cancel(self, subscription_id: int, *, at_period_end: bool = True) -> SubscriptionReceipt:
        """Stop renewing. At period end (default): access lasts to the end of the paid
        period. Immediately: access ends now; no money moves (refund the period's
        purchase through ``RefundService`` if the merchant wants to)."""

        def cancel_in(tx: BillingTx) -> SubscriptionReceipt:
            sub = tx.get_subscription(subscription_id)
            if sub is None:
                return SubscriptionReceipt(SubscriptionStatus.subscription_not_found)
            if sub.state is SubscriptionState.cancelled:
                return SubscriptionReceipt(SubscriptionStatus.already_cancelled, sub.id, sub.state)
            now_us = self.payments.clock()
            if at_period_end:
                if not tx.request_cancel(sub.id, now_us):
                    raise TransientStoreError("subscription changed concurrently")
            else:
                if not tx.set_subscription_state(
                    sub.id, sub.period_number, SubscriptionState.cancelled, now_us
                ):
                    raise TransientStoreError("subscription changed concurrently")
                for paid in tx.paid_periods(sub.id):
                    if paid.ends_at_us > now_us:
                        tx.revoke_entitlements(paid.purchase_id)
            fresh = tx.get_subscription(sub.id)
            if fresh is None:
                raise LedgerInvariantError(f"subscription {sub.id} vanished")
            return _sub_receipt(fresh)

        return self._tx(cancel_in)

    def get(self, subscription_id: int) -> SubscriptionRecord | None:
        return self._tx(lambda tx: tx.get_subscription(subscription_id))

    def periods(self, subscription_id: int) -> list[PaidPeriod]:
        return self._tx(lambda tx: tx.paid_periods(subscription_id))


def replace_funding(receipt: SubscriptionReceipt, source: FundingSource) -> SubscriptionReceipt:
    return replace(receipt, funding=source)


def _sub_refusal(payment: _Payment) -> SubscriptionStatus:
    if payment.refusal is None:
        return SubscriptionStatus.no_prepaid_source
    if payment.refusal is PurchaseStatus.tab_frozen:
        return SubscriptionStatus.tab_frozen
    return SubscriptionStatus.insufficient_funds
