"""Revenue sharing and payouts: splits on each sale, a holding period, payouts, verification.

Money path of a sale (all in the ledger, see ``payouts/plans.py``): the
merchant's payable pays the platform fee to ``platform_revenue`` and each
payee's share to that payee's *pending* account; after the payee's holding
period ``release_due`` moves it to *available*; ``run_payouts`` pays a verified
payee's available balance (whole minor units, at least the threshold) through
the processor, once per schedule period. A refund takes back from the fee and
from each share: from pending while held, else from available, which may go
negative -- a debt that later earnings repay before any payout.

Processor calls never run inside a database transaction: a payout is recorded
``pending`` with a ledger hold on the payee's balance and committed; the
processor is asked with the key ``micropay-payout-<id>``; the outcome posts
or voids the hold, at most once. A crash between leaves the payout pending and
the next run asks again with the same key, so nothing is paid twice or lost.

Bank accounts are verified by micro-deposits: two random amounts below one
unit are paid out; the payee confirms them within ``verification_attempts_max``
guesses; then both are taken back from the payee's earnings, and only a
verified payee is ever paid.

The package: ``base`` (limits, statuses, outcomes, the SQL port), ``sales``
(payees, fees, splits, sales, refunds, releases), ``runs`` (payouts),
``verification`` (micro-deposits), ``statements`` (balances, CSV and readable
statements, reconciliation). ``micropay.service.payouts`` re-exports all of it.
"""

from __future__ import annotations

from micropay.service.payouts.base import (
    CHECK,
    Binder,
    PayoutOutcome,
    PayoutsInputError,
    PayoutStatus,
    PayoutsTx,
    Progress,
    ReversalOutcome,
    ReversalStatus,
    SaleOutcome,
    SaleStatus,
    VerificationOutcome,
    VerificationStatus,
    destination_token_chars_max,
    hold_s_default,
    hold_s_max,
    micro_deposit_minor_max,
    mixed_in,
    no_progress,
    payees_per_run_max,
    payout_threshold_micros_default,
    payouts_per_run_max,
    shares_per_release_max,
    verification_attempts_max_default,
)
from micropay.service.payouts.sales import SalesMixin
from micropay.service.payouts.statements import (
    Statement,
    StatementsMixin,
    reconcile_payouts,
)
from micropay.service.payouts.verification import VerificationMixin


class Payouts(SalesMixin, VerificationMixin, StatementsMixin):
    """Revenue sharing, payouts, verification and statements over one :class:`Payments`."""


__all__ = [
    "CHECK",
    "Binder",
    "PayoutOutcome",
    "PayoutStatus",
    "Payouts",
    "PayoutsInputError",
    "PayoutsTx",
    "Progress",
    "ReversalOutcome",
    "ReversalStatus",
    "SaleOutcome",
    "SaleStatus",
    "Statement",
    "VerificationOutcome",
    "VerificationStatus",
    "destination_token_chars_max",
    "hold_s_default",
    "hold_s_max",
    "micro_deposit_minor_max",
    "mixed_in",
    "no_progress",
    "payees_per_run_max",
    "payout_threshold_micros_default",
    "payouts_per_run_max",
    "reconcile_payouts",
    "shares_per_release_max",
    "verification_attempts_max_default",
]
