"""Tips, metered usage and subscriptions, on top of :class:`~micropay.service.payments.Payments`.

Money comes from the customer's prepaid wallet or post-pay tab, chosen by the
merchant's funding policy (``funding.choose_source``; a ``direct`` entry is
skipped: a card charge per tip, per usage window or per period is what
micropay exists to avoid). A tab that is full is settled by one card charge
and the payment tried once more (tips and subscriptions; not usage
aggregation, a batch job that must not call the processor per customer).

- **Tips**: a customer-chosen amount within the merchant's ``tip_micros_min``
  .. ``tip_micros_max`` (default 0.01 .. 100 units), one transfer, idempotent
  per (merchant, key).
- **Usage**: recording an event is one INSERT (priced from the meter by the
  same statement), no ledger write; idempotent per (merchant, key).
  :meth:`Metering.aggregate_usage` bills, per (merchant, customer, meter,
  window), ONE transfer of exactly sum(quantity x unit price). Each event is
  marked with its posting id in the same database transaction as the
  transfer, so it is billed exactly once however often or concurrently
  aggregation runs. A window the customer cannot pay (neither wallet nor tab
  covers the whole amount) is left unbilled and reported; its events roll
  into the next aggregation. Events that arrive for a window already posted
  (late commits) roll into the next window likewise.
- **Subscriptions**: a plan's price is paid per billing period (wallet or
  tab), each paid period is a purchase row with an entitlement to the plan
  ref for exactly that period, so ``Payments.has_access`` and entitlement
  tokens work unchanged. A renewal is keyed by (subscription, period number)
  and recorded by compare-and-set: renewed once, however many renewers race.
  A failed renewal makes the subscription ``past_due`` (no entitlement for
  the new period; retried by later runs). Cancelling at period end keeps
  access to the end of the paid period and stops renewal.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Protocol, TypeVar, cast

from micropay.core.accounts import Account, available_micros
from micropay.core.transfers import Transfer
from micropay.payments import chart
from micropay.payments.billing import (
    BillingCode,
    BillingPeriod,
    Meter,
    PaidPeriod,
    Period,
    Plan,
    SubscriptionRecord,
    SubscriptionState,
    SubscriptionStatus,
    TipLimits,
    TipRecord,
    TipStatus,
    UsageClaim,
    UsagePosting,
    UsageRecord,
    UsageStatus,
    billing_period,
    is_valid_quantity,
    is_valid_ref,
    is_valid_unit_price,
    local_date,
    meter_ref_chars_max,
    note_valid,
    period_number_at,
    plan_ref_chars_max,
    subscriptions_per_renewal_run_max,
    tip_limits_valid,
    tip_refusal,
    usage_events_per_call_max,
    usage_events_per_posting_max,
    usage_groups_per_run_max,
    zone,
)
from micropay.payments.funding import choose_source
from micropay.payments.models import (
    Customer,
    FundingSource,
    Merchant,
    PurchaseStatus,
    TabState,
    is_valid_key,
    is_valid_price,
    name_chars_max,
)
from micropay.payments.records import EntitlementRecord, PurchaseRecord
from micropay.service.charges import LedgerInvariantError, request_hash
from micropay.service.ledger import apply_in_transaction
from micropay.service.payments import Payments, PaymentsInputError
from micropay.service.ports import PaymentsWriteTx, TransientStoreError

T = TypeVar("T")
_PREPAID = (FundingSource.wallet, FundingSource.tab)


class BillingTx(PaymentsWriteTx, Protocol):
    """The write transaction with the billing tables (``store/billing_sql.py``)."""

    def get_tip_limits(self, merchant_id: int) -> TipLimits | None: ...
    def set_tip_limits(self, merchant_id: int, tip_limits: TipLimits) -> None: ...
    def find_tip(self, merchant_id: int, idempotency_key: str) -> TipRecord | None: ...
    def insert_tip(self, t: TipRecord) -> None: ...
    def upsert_meter(self, m: Meter) -> None: ...
    def get_meter(self, merchant_id: int, meter: str) -> Meter | None: ...
    def insert_usage_event(
        self,
        event_id: int,
        merchant_id: int,
        customer_id: int,
        meter: str,
        quantity: int,
        idempotency_key: str,
        now_us: int,
    ) -> bool: ...
    def find_usage_event(self, merchant_id: int, idempotency_key: str) -> UsageRecord | None: ...
    def unbilled_usage_groups(
        self, window_end_us: int, limit: int
    ) -> list[tuple[int, int, str]]: ...
    def find_usage_posting(
        self, merchant_id: int, customer_id: int, meter: str, window_end_us: int
    ) -> UsagePosting | None: ...
    def claim_usage(
        self,
        posting_id: int,
        merchant_id: int,
        customer_id: int,
        meter: str,
        window_end_us: int,
        limit: int,
    ) -> UsageClaim: ...
    def insert_usage_posting(self, p: UsagePosting) -> None: ...
    def usage_postings(self, merchant_id: int, customer_id: int) -> list[UsagePosting]: ...
    def usage_events_unbilled(self, merchant_id: int, customer_id: int) -> int: ...
    def upsert_plan(self, p: Plan) -> None: ...
    def get_plan(self, merchant_id: int, plan_ref: str) -> Plan | None: ...
    def insert_subscription(self, s: SubscriptionRecord) -> None: ...
    def get_subscription(self, subscription_id: int) -> SubscriptionRecord | None: ...
    def find_subscription(
        self, merchant_id: int, idempotency_key: str
    ) -> SubscriptionRecord | None: ...
    def due_subscriptions(self, now_us: int, limit: int) -> list[int]: ...
    def advance_subscription(
        self,
        subscription_id: int,
        paid_number: int,
        number: int,
        starts_us: int,
        ends_us: int,
        now_us: int,
    ) -> bool: ...
    def set_subscription_state(
        self, subscription_id: int, paid_number: int, state: SubscriptionState, now_us: int
    ) -> bool: ...
    def request_cancel(self, subscription_id: int, now_us: int) -> bool: ...
    def insert_paid_period(self, p: PaidPeriod) -> None: ...
    def paid_periods(self, subscription_id: int) -> list[PaidPeriod]: ...


class _SettleTabFirst:
    """The tab is full: settle it (one card charge, outside any transaction), then retry once."""


_SETTLE = _SettleTabFirst()


@dataclass(frozen=True, slots=True)
class _Payment:
    source: FundingSource | None = None
    refusal: PurchaseStatus | None = None
    message: str = ""
    settle_tab: bool = False


class _Base:
    def __init__(self, payments: Payments) -> None:
        self.payments = payments

    def _tx(self, operation: Callable[[BillingTx], T]) -> T:
        return self.payments.charges.tx(lambda tx: operation(cast(BillingTx, tx)))

    def _choose(
        self,
        tx: BillingTx,
        merchant: Merchant,
        customer: Customer,
        amount_micros: int,
        *,
        settlable: bool,
    ) -> _Payment:
        """Lock the customer's wallet and tab (and the payable) and pick who pays, if anyone."""
        policy = [s for s in merchant.funding_policy if s in _PREPAID]
        if not policy:
            return _Payment(refusal=None, message="the merchant takes neither wallet nor tab")
        accounts = _lock(tx, merchant.id, customer)
        choice = choose_source(
            policy,
            amount_micros,
            wallet_available=available_micros(
                accounts[chart.wallet_account(customer.id, customer.currency)]
            ),
            tab_available=available_micros(
                accounts[chart.tab_account(customer.id, customer.currency)]
            ),
            tab_frozen=customer.tab_state is TabState.frozen,
            tab_settlable=settlable,
            has_payment_method=bool(customer.payment_method_token),
            guard=None,
        )
        if choice.settle_tab:
            return _Payment(settle_tab=True)
        if choice.refusal is not None:
            return _Payment(refusal=choice.refusal, message=choice.message)
        return _Payment(source=choice.source)

    def _pay(
        self,
        tx: BillingTx,
        source: FundingSource,
        merchant_id: int,
        customer: Customer,
        amount_micros: int,
        code: BillingCode,
        reference: str,
    ) -> int:
        """One transfer from the wallet or tab to the merchant payable; its id."""
        debit = (
            chart.wallet_account(customer.id, customer.currency)
            if source is FundingSource.wallet
            else chart.tab_account(customer.id, customer.currency)
        )
        transfer = Transfer(
            self.payments.new_id(),
            debit,
            chart.payable_account(merchant_id, customer.currency),
            amount_micros,
            customer.currency,
            code=int(code),
            reference=reference,
        )
        [result] = apply_in_transaction(tx, [transfer], self.payments.clock())
        if not result.ok:
            # The balances were read under the write lock: a refusal here is a bug.
            raise LedgerInvariantError(f"{reference}: transfer refused: {result.status.value}")
        return transfer.id

    def _with_settlement(
        self, customer_id: int, attempt: Callable[[bool], T | _SettleTabFirst]
    ) -> T:
        outcome = attempt(False)
        if isinstance(outcome, _SettleTabFirst):
            self.payments.charges.settle_tab(customer_id, forced=True)
            outcome = attempt(True)
        if isinstance(outcome, _SettleTabFirst):
            raise LedgerInvariantError("tab settlement asked for twice")
        return outcome


def _lock(tx: BillingTx, merchant_id: int, customer: Customer) -> dict[int, Account]:
    ids = [
        chart.payable_account(merchant_id, customer.currency),
        chart.wallet_account(customer.id, customer.currency),
        chart.tab_account(customer.id, customer.currency),
    ]
    accounts = tx.lock_accounts(ids)
    if set(ids) - set(accounts):
        raise LedgerInvariantError(f"accounts missing for customer {customer.id}")
    return accounts


# --- tips -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TipReceipt:
    status: TipStatus
    tip_id: int = 0
    amount_micros: int = 0
    currency: str = ""
    funding: FundingSource | None = None
    transfer_id: int = 0
    message: str = ""
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status is TipStatus.ok


def _tip_receipt(t: TipRecord, *, replayed: bool) -> TipReceipt:
    return TipReceipt(
        TipStatus.ok,
        t.id,
        t.amount_micros,
        t.currency,
        FundingSource(t.funding),
        t.transfer_id,
        "",
        replayed,
    )


class Tips(_Base):
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
    ) -> TipReceipt:
        """Tip ``amount_micros`` from the wallet or tab. Idempotent per (merchant, key).

        Outcomes: ``ok`` (a receipt; ``replayed`` on a retry), or a refusal that
        writes nothing: bad key, note or amount, outside the merchant's limits,
        unknown merchant/customer, other currency, key reused for a different
        tip, no prepaid source, frozen tab, insufficient funds.
        """
        if not is_valid_key(idempotency_key):
            return TipReceipt(TipStatus.idempotency_key_invalid)
        if not note_valid(note):
            return TipReceipt(
                TipStatus.note_invalid, message="a note is at most 280 printable characters"
            )
        if type(amount_micros) is not int or amount_micros <= 0:
            return TipReceipt(TipStatus.amount_invalid)
        fingerprint = request_hash("tip", merchant_id, customer_id, amount_micros, note)

        def attempt(settled: bool) -> TipReceipt | _SettleTabFirst:
            return self._tx(
                lambda tx: self._tip_in(
                    tx,
                    merchant_id,
                    customer_id,
                    amount_micros,
                    idempotency_key,
                    note,
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
            return _tip_receipt(existing, replayed=True)
        customer = tx.get_customer(customer_id)
        if customer is None:
            return TipReceipt(TipStatus.customer_not_found)
        if customer.currency != merchant.currency:
            return TipReceipt(TipStatus.currency_not_sold, currency=merchant.currency)
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
        tx.insert_tip(record)
        return _tip_receipt(record, replayed=False)


def _tip_refusal(payment: _Payment) -> TipStatus:
    if payment.refusal is None:
        return TipStatus.no_prepaid_source
    if payment.refusal is PurchaseStatus.tab_frozen:
        return TipStatus.tab_frozen
    return TipStatus.insufficient_funds


# --- metered usage ------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class UsageEvent:
    customer_id: int
    meter: str
    quantity: int
    idempotency_key: str


@dataclass(frozen=True, slots=True)
class UsageReceipt:
    status: UsageStatus
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status is UsageStatus.ok


@dataclass(frozen=True, slots=True)
class UnpaidUsage:
    merchant_id: int
    customer_id: int
    meter: str
    amount_micros: int
    events: int
    reason: str


@dataclass(slots=True)
class AggregationReport:
    window_end_us: int
    postings: list[UsagePosting] = field(default_factory=list)
    unpaid: list[UnpaidUsage] = field(default_factory=list)  # left unbilled, retried later
    deferred: int = 0  # groups already posted for this window: their late events wait


class _Unpayable(Exception):
    def __init__(self, unpaid: UnpaidUsage) -> None:
        super().__init__(unpaid.reason)
        self.unpaid = unpaid


class Metering(_Base):
    def set_meter(self, merchant_id: int, meter: str, unit_price_micros: int) -> Meter:
        """Set a meter's unit price (whole micros, 1 .. 1,000,000). Raises on bad input."""
        if not is_valid_ref(meter, meter_ref_chars_max):
            raise PaymentsInputError("meter must be 1-64 printable ASCII characters")
        if not is_valid_unit_price(unit_price_micros):
            raise PaymentsInputError("unit price must be an int of 1 .. 1,000,000 micros")

        def store(tx: BillingTx) -> Meter:
            merchant = tx.get_merchant(merchant_id)
            if merchant is None:
                raise PaymentsInputError("unknown merchant")
            m = Meter(merchant_id, meter, unit_price_micros, merchant.currency)
            tx.upsert_meter(m)
            return m

        return self._tx(store)

    def record_usage(
        self, merchant_id: int, customer_id: int, meter: str, quantity: int, idempotency_key: str
    ) -> UsageReceipt:
        """Record one usage event: one INSERT, no ledger write. Idempotent per (merchant, key)."""
        [receipt] = self.record_usage_batch(
            merchant_id, [UsageEvent(customer_id, meter, quantity, idempotency_key)]
        )
        return receipt

    def record_usage_batch(
        self, merchant_id: int, events: Sequence[UsageEvent]
    ) -> list[UsageReceipt]:
        """Record up to ``usage_events_per_call_max`` events in one transaction.

        Each event gets its own receipt: refused events write nothing, the
        others are recorded. A batch past the limit is refused whole.
        """
        if len(events) > usage_events_per_call_max:
            return [UsageReceipt(UsageStatus.batch_too_large)] * len(events)
        checked = [_usage_refusal(e) for e in events]

        def record(tx: BillingTx) -> list[UsageReceipt]:
            now_us = self.payments.clock()
            receipts = []
            for event, refusal in zip(events, checked, strict=True):
                if refusal is not None:
                    receipts.append(UsageReceipt(refusal))
                    continue
                inserted = tx.insert_usage_event(
                    self.payments.new_id(),
                    merchant_id,
                    event.customer_id,
                    event.meter,
                    event.quantity,
                    event.idempotency_key,
                    now_us,
                )
                receipts.append(
                    UsageReceipt(UsageStatus.ok) if inserted else _why_not(tx, merchant_id, event)
                )
            return receipts

        return self._tx(record)

    def aggregate_usage(
        self, window_end_us: int, *, groups_max: int = usage_groups_per_run_max
    ) -> AggregationReport:
        """Bill every unbilled event before ``window_end_us``: one transfer per
        (merchant, customer, meter) for this window, each event exactly once.

        ``window_end_us`` may not be in the future. Unpayable groups stay
        unbilled and are listed in the report.
        """
        if type(window_end_us) is not int or window_end_us > self.payments.clock():
            raise ValueError("window end must be an int of micros, not in the future")
        report = AggregationReport(window_end_us)
        groups = self._tx(
            lambda tx: tx.unbilled_usage_groups(
                window_end_us, min(groups_max, usage_groups_per_run_max)
            )
        )
        for merchant_id, customer_id, meter in groups:
            try:
                posted = self._tx(
                    lambda tx, m=merchant_id, c=customer_id, r=meter: self._post_group(  # type: ignore[misc]
                        tx, m, c, r, window_end_us
                    )
                )
            except _Unpayable as unpayable:
                report.unpaid.append(unpayable.unpaid)
                continue
            if posted is None:
                report.deferred += 1
            elif isinstance(posted, UsagePosting):
                report.postings.append(posted)
        return report

    def _post_group(
        self, tx: BillingTx, merchant_id: int, customer_id: int, meter: str, window_end_us: int
    ) -> UsagePosting | bool | None:
        merchant = tx.get_merchant(merchant_id)
        customer = tx.get_customer(customer_id)
        if merchant is None or customer is None:
            raise LedgerInvariantError(
                f"usage for unknown merchant/customer {merchant_id}/{customer_id}"
            )
        _lock(tx, merchant_id, customer)  # serializes aggregations of this customer
        if tx.find_usage_posting(merchant_id, customer_id, meter, window_end_us) is not None:
            return None
        posting_id = self.payments.new_id()
        claim = tx.claim_usage(
            posting_id, merchant_id, customer_id, meter, window_end_us, usage_events_per_posting_max
        )
        if claim.events == 0:
            return False  # another run billed them
        payment = self._choose(tx, merchant, customer, claim.amount_micros, settlable=False)
        if payment.source is None:
            # Raising rolls back the claim: the events stay unbilled.
            raise _Unpayable(
                UnpaidUsage(
                    merchant_id,
                    customer_id,
                    meter,
                    claim.amount_micros,
                    claim.events,
                    _tip_refusal(payment).value,
                )
            )
        transfer_id = self._pay(
            tx,
            payment.source,
            merchant_id,
            customer,
            claim.amount_micros,
            BillingCode.usage,
            f"usage:{posting_id}",
        )
        posting = UsagePosting(
            posting_id,
            merchant_id,
            customer_id,
            meter,
            window_end_us,
            claim.events,
            claim.quantity,
            claim.amount_micros,
            customer.currency,
            payment.source.value,
            transfer_id,
            self.payments.clock(),
        )
        tx.insert_usage_posting(posting)
        return posting

    def postings(self, merchant_id: int, customer_id: int) -> list[UsagePosting]:
        return self._tx(lambda tx: tx.usage_postings(merchant_id, customer_id))

    def unbilled(self, merchant_id: int, customer_id: int) -> int:
        return self._tx(lambda tx: tx.usage_events_unbilled(merchant_id, customer_id))


def _usage_refusal(event: UsageEvent) -> UsageStatus | None:
    if not is_valid_key(event.idempotency_key):
        return UsageStatus.idempotency_key_invalid
    if not is_valid_quantity(event.quantity):
        return UsageStatus.quantity_invalid
    if not is_valid_ref(event.meter, meter_ref_chars_max):
        return UsageStatus.meter_not_found
    if type(event.customer_id) is not int:
        return UsageStatus.customer_not_found
    return None


def _why_not(tx: BillingTx, merchant_id: int, event: UsageEvent) -> UsageReceipt:
    """The slow path after an INSERT that inserted nothing: a replay, or which refusal."""
    existing = tx.find_usage_event(merchant_id, event.idempotency_key)
    if existing is not None:
        if existing == UsageRecord(event.customer_id, event.meter, event.quantity):
            return UsageReceipt(UsageStatus.ok, replayed=True)
        return UsageReceipt(UsageStatus.idempotency_key_reused)
    if tx.get_merchant(merchant_id) is None:
        return UsageReceipt(UsageStatus.merchant_not_found)
    if tx.get_meter(merchant_id, event.meter) is None:
        return UsageReceipt(UsageStatus.meter_not_found)
    if tx.get_customer(event.customer_id) is None:
        return UsageReceipt(UsageStatus.customer_not_found)
    return UsageReceipt(UsageStatus.currency_not_sold)


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


__all__ = [
    "AggregationReport",
    "Metering",
    "RenewalOutcome",
    "SubscriptionReceipt",
    "Subscriptions",
    "TipReceipt",
    "Tips",
    "UnpaidUsage",
    "UsageEvent",
    "UsageReceipt",
]
