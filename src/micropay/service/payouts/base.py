"""What the payout modules share: limits, statuses, outcomes, the SQL port, the base class."""

from __future__ import annotations

import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, cast

from micropay.core.transfers import Transfer
from micropay.payouts.plans import (
    Bucket,
    Payee,
    PayoutCode,
    PayoutRecord,
    SaleRecord,
    SaleShare,
    Verification,
    payee_account,
)
from micropay.payouts.splits import PlatformFee, Share
from micropay.service.billing.tips import TipPaid, tip_hooks
from micropay.service.charges import LedgerInvariantError
from micropay.service.ledger import apply_in_transaction
from micropay.service.payments import Payments
from micropay.service.ports import PaymentsStore, PaymentsWriteTx

payout_threshold_micros_default = 100_000_000  # 100 units
hold_s_default = 7 * 86_400
hold_s_max = 366 * 86_400
verification_attempts_max_default = 3
micro_deposit_minor_max = 99  # below one unit (for a 2-decimal currency)
payees_per_run_max = 1_000
shares_per_release_max = 1_000
payouts_per_run_max = 1_000
destination_token_chars_max = 255
CHECK = "processor_payouts_match_ledger"


class PayoutsInputError(ValueError):
    """Bad input to a setup call (payee, fee, split): nothing was written."""


class SaleStatus(enum.Enum):
    ok = "ok"
    already_recorded = "already_recorded"  # the first split stands; nothing new written
    purchase_not_found = "purchase_not_found"
    purchase_not_paid = "purchase_not_paid"
    purchase_refunded = "purchase_refunded"  # refunded before its split was recorded
    no_split = "no_split"  # the item has no revenue split: the merchant keeps the proceeds


class ReversalStatus(enum.Enum):
    ok = "ok"
    already_reversed = "already_reversed"
    refund_not_found = "refund_not_found"
    refund_not_settled = "refund_not_settled"  # pending or declined at the processor
    no_sale = "no_sale"  # the purchase had no split: nothing to take back from payees


class PayoutStatus(enum.Enum):
    pending = "pending"
    succeeded = "succeeded"
    declined = "declined"


class VerificationStatus(enum.Enum):
    deposits_sent = "deposits_sent"
    verified = "verified"
    wrong_amounts = "wrong_amounts"  # a guess used up; ``attempts_left`` says how many remain
    locked = "locked"  # too many wrong guesses: staff must step in
    already_verified = "already_verified"
    already_started = "already_started"
    not_started = "not_started"
    deposits_not_settled = "deposits_not_settled"  # the processor has not paid both yet
    payee_not_found = "payee_not_found"
    amount_invalid = "amount_invalid"


@dataclass(frozen=True, slots=True)
class SaleOutcome:
    status: SaleStatus
    fee_micros: int = 0
    parts: tuple[tuple[int, int], ...] = ()  # (payee_id, amount_micros)


@dataclass(frozen=True, slots=True)
class ReversalOutcome:
    status: ReversalStatus
    fee_micros: int = 0
    parts: tuple[tuple[int, Bucket, int], ...] = ()  # (payee_id, bucket, amount_micros)


@dataclass(frozen=True, slots=True)
class PayoutOutcome:
    payout_id: int
    payee_id: int
    status: PayoutStatus
    amount_micros: int


@dataclass(frozen=True, slots=True)
class VerificationOutcome:
    status: VerificationStatus
    attempts_left: int = 0


class PayoutsTx(Protocol):
    """The SQL this module needs inside a write transaction (``store/payouts_sql.py``)."""

    def insert_payee(self, p: Payee, now_us: int) -> int: ...
    def get_payee(self, payee_id: int) -> Payee | None: ...
    def set_payee_verified(self, payee_id: int) -> bool: ...
    def scheduled_payees(self, after_id: int, limit: int) -> list[int]: ...
    def set_platform_fee(self, merchant_id: int, fee: PlatformFee) -> None: ...
    def get_platform_fee(self, merchant_id: int) -> PlatformFee | None: ...
    def set_split(self, merchant_id: int, item_ref: str, shares: Sequence[Share]) -> None: ...
    def get_split(self, merchant_id: int, item_ref: str) -> list[Share]: ...
    def insert_sale(
        self, s: SaleRecord, shares: Sequence[SaleShare], *, tip_id: int | None = None
    ) -> None: ...
    def get_sale(self, purchase_id: int) -> SaleRecord | None: ...
    def sale_shares(self, purchase_id: int) -> list[SaleShare]: ...
    def add_sale_reversal(self, purchase_id: int, refund_micros: int, fee_micros: int) -> bool: ...
    def add_share_reversed(self, purchase_id: int, payee_id: int, amount_micros: int) -> bool: ...
    def insert_reversal(
        self, refund_id: int, purchase_id: int, amount_micros: int, now_us: int
    ) -> bool: ...
    def due_shares(self, now_us: int, limit: int) -> list[SaleShare]: ...
    def mark_share_released(self, purchase_id: int, payee_id: int) -> int | None: ...
    def insert_payout(self, p: PayoutRecord) -> None: ...
    def get_payout(self, payout_id: int) -> PayoutRecord | None: ...
    def find_payout(self, payee_id: int, purpose: str, period_key: str) -> PayoutRecord | None: ...
    def finish_payout(
        self, payout_id: int, status: str, processor_payout_id: str, now_us: int
    ) -> bool: ...
    def pending_payouts(self, limit: int) -> list[int]: ...
    def payouts_for_reconcile(self) -> list[PayoutRecord]: ...
    def insert_verification(self, v: Verification, now_us: int) -> None: ...
    def get_verification(self, payee_id: int) -> Verification | None: ...
    def update_verification(
        self, payee_id: int, attempts: int, status: str, was_attempts: int, now_us: int
    ) -> bool: ...


Binder = Callable[[PaymentsWriteTx], PayoutsTx]
Progress = Callable[[], None]  # called between units of a long run (a worker's heartbeat)


def no_progress() -> None:
    return None


def mixed_in(tx: PaymentsWriteTx) -> PayoutsTx:
    """The default binder: the store's transaction has the payout SQL mixed in."""
    return cast(PayoutsTx, tx)


class PayoutsBase:
    """The state every part of :class:`~micropay.service.payouts.Payouts` shares."""

    def __init__(
        self,
        payments: Payments,
        *,
        rng: random.Random | None = None,
        verification_attempts_max: int = verification_attempts_max_default,
        bind: Binder = mixed_in,
        attach: bool = False,
    ) -> None:
        """``attach`` records every paid purchase's split, every tip's split (a tip
        for an item with a split) and every settled refund's reversal in the same
        transaction as the purchase, tip or refund (hooks on ``Payments`` and on
        ``Tips``); without it, call :meth:`record_sale` / :meth:`on_refund`
        (tips have no such call: their split is recorded by the hook only).
        ``bind`` gives the payout SQL over a transaction."""
        self.payments = payments
        self.bind = bind
        self.store: PaymentsStore = payments.store
        self.processor = payments.charges.processor
        self.clock = payments.clock
        self.new_id = payments.new_id
        self.tx = payments.charges.tx
        self._rng = rng or random.SystemRandom()
        self.verification_attempts_max = verification_attempts_max
        if attach:
            payments.sale_hooks.append(self._record_sale_in)
            payments.refunds.refund_hooks.append(self._on_refund_in)
            tip_hooks(payments).append(self._record_tip_in)

    def get_payee(self, payee_id: int) -> Payee | None:
        return self.tx(lambda tx: self.bind(tx).get_payee(payee_id))

    # The hooks ``attach`` installs (``sales.SalesMixin`` defines them).
    def _record_sale_in(self, tx: PaymentsWriteTx, purchase_id: int) -> SaleOutcome:
        raise NotImplementedError

    def _on_refund_in(self, tx: PaymentsWriteTx, refund_id: int) -> ReversalOutcome:
        raise NotImplementedError

    def _record_tip_in(self, tx: PaymentsWriteTx, tip: TipPaid) -> SaleOutcome:
        raise NotImplementedError


def apply_plan(tx: PaymentsWriteTx, plan: list[Transfer], now_us: int, what: str) -> None:
    if not plan:
        return
    results = apply_in_transaction(tx, plan, now_us)
    if not all(r.ok for r in results):
        raise LedgerInvariantError(f"{what} refused: {[r.status.value for r in results]}")


def share_accounts(shares: Sequence[SaleShare], currency: str) -> list[int]:
    return sorted(
        payee_account(s.payee_id, b, currency)
        for s in shares
        for b in (Bucket.pending, Bucket.available)
    )


def sale_currency(sql: PayoutsTx, purchase_id: int) -> str:
    sale = sql.get_sale(purchase_id)
    if sale is None:
        raise LedgerInvariantError(f"share of missing sale {purchase_id}")
    return sale.currency


def outcome_of(p: PayoutRecord) -> PayoutOutcome:
    return PayoutOutcome(p.id, p.payee_id, PayoutStatus(p.status), p.amount_micros)


def movement_name(code: int) -> str:
    try:
        return PayoutCode(code).name
    except ValueError:
        return str(code)
