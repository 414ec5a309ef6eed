"""Metered usage: cheap event recording, exact per-window ledger postings."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from micropay.payments.billing import (
    BillingCode,
    Meter,
    UsagePosting,
    UsageRecord,
    UsageStatus,
    is_valid_quantity,
    is_valid_ref,
    is_valid_unit_price,
    meter_ref_chars_max,
    usage_events_per_call_max,
    usage_events_per_posting_max,
    usage_groups_per_run_max,
)
from micropay.payments.models import (
    is_valid_key,
)
from micropay.service.billing._base import (
    BillingTx,
    _Base,
    _lock,
)
from micropay.service.billing.tips import _tip_refusal
from micropay.service.charges import LedgerInvariantError
from micropay.service.payments import PaymentsInputError

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
