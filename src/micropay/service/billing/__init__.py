"""Tips, metered usage and subscriptions, on top of :class:`~micropay.service.payments.Payments`.

Money comes from the customer's prepaid wallet or post-pay tab, chosen by the
merchant's funding policy (``funding.choose_source``; a ``direct`` entry is
skipped: a card charge per tip, per usage window or per period is what
micropay exists to avoid). A tab that is full is settled by one card charge
and the payment tried once more (tips and subscriptions; not usage
aggregation, a batch job that must not call the processor per customer).

- **Tips**: a customer-chosen amount within the merchant's ``tip_micros_min``
  .. ``tip_micros_max`` (default 0.01 .. 100 units), one transfer, idempotent
  per (merchant, key). A tip may name an item it is for; the tip hooks
  (``Payouts(..., attach=True)`` joins them) split it like that item's sales
  in the tip's own transaction.
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

from micropay.service.billing.metering import (
    AggregationReport,
    Metering,
    UnpaidUsage,
    UsageEvent,
    UsageReceipt,
)
from micropay.service.billing.subscriptions import (
    RenewalOutcome,
    SubscriptionReceipt,
    Subscriptions,
)
from micropay.service.billing.tips import TipHook, TipPaid, TipReceipt, Tips, tip_hooks

__all__ = [
    "AggregationReport",
    "Metering",
    "RenewalOutcome",
    "SubscriptionReceipt",
    "Subscriptions",
    "TipHook",
    "TipPaid",
    "TipReceipt",
    "Tips",
    "UnpaidUsage",
    "UsageEvent",
    "UsageReceipt",
    "tip_hooks",
]
