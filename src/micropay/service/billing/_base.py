"""What tips, metering and subscriptions share: the transaction port, paying from wallet or tab."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol, TypeVar, cast

from micropay.core.accounts import Account, available_micros
from micropay.core.transfers import Transfer
from micropay.payments import chart
from micropay.payments.billing import (
    BillingCode,
    Meter,
    PaidPeriod,
    Plan,
    SubscriptionRecord,
    SubscriptionState,
    TipLimits,
    TipRecord,
    UsageClaim,
    UsagePosting,
    UsageRecord,
)
from micropay.payments.funding import choose_source
from micropay.payments.models import (
    Customer,
    FundingSource,
    Merchant,
    PurchaseStatus,
    TabState,
)
from micropay.service.charges import LedgerInvariantError
from micropay.service.ledger import apply_in_transaction
from micropay.service.payments import Payments
from micropay.service.ports import PaymentsWriteTx

T = TypeVar("T")
_PREPAID = (FundingSource.wallet, FundingSource.tab)


class BillingTx(PaymentsWriteTx, Protocol):
    """The write transaction with the billing tables (``store/billing_sql.py``)."""

    def get_tip_limits(self, merchant_id: int) -> TipLimits | None: ...
    def set_tip_limits(self, merchant_id: int, tip_limits: TipLimits) -> None: ...
    def find_tip(self, merchant_id: int, idempotency_key: str) -> TipRecord | None: ...
    def insert_tip(self, t: TipRecord, item_ref: str = "") -> None: ...
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
            tab_settlable=settlable
            and amount_micros
            <= self.payments.tab_policy.raised_limit(
                accounts[chart.tab_account(customer.id, customer.currency)].credit_limit_micros
            ),
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
