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
"""

from __future__ import annotations

import csv
import datetime as dt
import enum
import io
import random
import secrets
from collections import defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, cast

from micropay.core.accounts import available_micros
from micropay.core.currencies import is_currency
from micropay.core.money import Rounding, format_amount, from_minor_units, to_minor_units
from micropay.core.transfers import Transfer, TransferFlags
from micropay.payments.processor import Outcome, PayoutRequest
from micropay.payouts.plans import (
    Bucket,
    Payee,
    PayoutCode,
    PayoutRecord,
    SaleRecord,
    SaleShare,
    Schedule,
    Verification,
    payee_account,
    payee_accounts,
    payout_hold,
    period_key,
    release_transfer,
    resolve_hold,
    reversal_plan,
    sale_plan,
    take_back_transfer,
)
from micropay.payouts.splits import PlatformFee, Share, check_shares, reverse_parts, split_sale
from micropay.service.charges import LedgerInvariantError
from micropay.service.ledger import apply_in_transaction
from micropay.service.payments import Payments
from micropay.service.ports import PaymentsStore, PaymentsWriteTx
from micropay.service.reconcile import Violation

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
    def insert_sale(self, s: SaleRecord, shares: Sequence[SaleShare]) -> None: ...
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


def mixed_in(tx: PaymentsWriteTx) -> PayoutsTx:
    """The default binder: the store's transaction has the payout SQL mixed in."""
    return cast(PayoutsTx, tx)


class Payouts:
    def __init__(
        self,
        payments: Payments,
        *,
        rng: random.Random | None = None,
        verification_attempts_max: int = verification_attempts_max_default,
        bind: Binder = mixed_in,
        attach: bool = False,
    ) -> None:
        """``attach`` records every paid purchase's split and every settled refund's
        reversal in the same transaction as the purchase or refund (hooks on
        ``Payments``); without it, call :meth:`record_sale` / :meth:`on_refund`.
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

    def get_payee(self, payee_id: int) -> Payee | None:
        return self.tx(lambda tx: self.bind(tx).get_payee(payee_id))

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
        shares = sql.get_split(purchase.merchant_id, purchase.item_ref)
        if not shares:
            return SaleOutcome(SaleStatus.no_split)
        fee = sql.get_platform_fee(purchase.merchant_id) or PlatformFee()
        split = split_sale(purchase.price_micros, fee, shares)
        now_us = self.clock()
        ids = [self.new_id() for _ in range(len(shares) + 1)]
        plan = sale_plan(ids, purchase.merchant_id, purchase.currency, split, f"sale:{purchase_id}")
        _apply(tx, plan, now_us, f"sale {purchase_id}")
        rows = []
        for position, (payee_id, amount) in enumerate(split.payee_parts):
            payee = sql.get_payee(payee_id)
            if payee is None:
                raise LedgerInvariantError(f"split names missing payee {payee_id}")
            rows.append(
                SaleShare(
                    purchase_id,
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
                purchase_id,
                purchase.merchant_id,
                purchase.currency,
                split.gross_micros,
                split.fee_micros,
                0,
                0,
                now_us,
            ),
            rows,
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
        tx.lock_accounts(_share_accounts(shares, sale.currency))
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
        _apply(tx, plan, now_us, f"reversal of refund {refund_id}")
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
            currencies = {s.purchase_id: _sale_currency(sql, s.purchase_id) for s in due}
            ids = sorted({a for s in due for a in _share_accounts([s], currencies[s.purchase_id])})
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
            _apply(tx, plan, now_us, "release")
            return len(plan)

        return self.tx(release)

    # --- payouts -------------------------------------------------------------------

    def run_payouts(self, limit: int = payees_per_run_max) -> list[PayoutOutcome]:
        """Pay every verified, scheduled payee at or above threshold, once per period.

        Also finishes payouts left pending by an earlier run (crash, timeout), with
        their original idempotency key. Returns the outcomes of the payouts asked.
        """
        now_us = self.clock()
        after = 0
        started = 0
        while started < limit:
            page = self.tx(
                lambda tx, a=after: self.bind(tx).scheduled_payees(a, min(100, limit))  # type: ignore[misc]
            )
            if not page:
                break
            for payee_id in page:
                self.tx(lambda tx, p=payee_id: self._start_payout(tx, p, None, now_us))  # type: ignore[misc]
            after = page[-1]
            started += len(page)
        return self.run_pending()

    def request_payout(self, payee_id: int, request_key: str) -> PayoutOutcome | None:
        """A manual payout of a verified payee's available balance (idempotent per key)."""
        if not isinstance(request_key, str) or not 0 < len(request_key) <= 50:
            return None
        now_us = self.clock()
        payout_id = self.tx(
            lambda tx: self._start_payout(tx, payee_id, f"manual:{request_key}", now_us)
        )
        return None if payout_id is None else self.execute(payout_id)

    def _start_payout(
        self, tx: PaymentsWriteTx, payee_id: int, period: str | None, now_us: int
    ) -> int | None:
        sql = self.bind(tx)
        payee = sql.get_payee(payee_id)
        if payee is None or not payee.verified:
            return None  # never pay an unverified bank account
        if period is None:
            if payee.schedule is Schedule.manual:
                return None
            period = period_key(payee.schedule, now_us)
        available_id = payee_account(payee.id, Bucket.available, payee.currency)
        account = tx.lock_accounts([available_id])[available_id]  # serializes racing runs
        existing = sql.find_payout(payee.id, "earnings", period)
        if existing is not None:
            return existing.id
        balance = available_micros(account)
        exponent = self.processor.minor_exponent(payee.currency)
        _minor, remainder = to_minor_units(balance, exponent, Rounding.DOWN)
        amount = balance - remainder  # the sub-cent remainder stays for next time
        if amount < payee.threshold_micros:
            return None  # below threshold, or in debt
        return self._new_payout(tx, payee, "earnings", period, amount, Bucket.available, now_us)

    def _new_payout(
        self,
        tx: PaymentsWriteTx,
        payee: Payee,
        purpose: str,
        period: str,
        amount_micros: int,
        bucket: Bucket,
        now_us: int,
    ) -> int:
        payout_id = self.new_id()
        hold_id = self.new_id()
        code = PayoutCode.payout if purpose == "earnings" else PayoutCode.micro_deposit
        hold = payout_hold(
            hold_id, payee.id, bucket, amount_micros, payee.currency, code, f"payout:{payout_id}"
        )
        _apply(tx, [hold], now_us, f"payout {payout_id} hold")
        self.bind(tx).insert_payout(
            PayoutRecord(
                payout_id,
                payee.id,
                purpose,
                period,
                amount_micros,
                payee.currency,
                "pending",
                hold_id,
                "",
                now_us,
                now_us,
            )
        )
        return payout_id

    def run_pending(self, limit: int = payouts_per_run_max) -> list[PayoutOutcome]:
        ids = self.tx(lambda tx: self.bind(tx).pending_payouts(min(limit, payouts_per_run_max)))
        return [self.execute(payout_id) for payout_id in ids]

    def execute(self, payout_id: int) -> PayoutOutcome:
        """Ask the processor to pay a pending payout and record the outcome (idempotent)."""
        payout = self.tx(lambda tx: self.bind(tx).get_payout(payout_id))
        if payout is None:
            raise KeyError(f"no payout {payout_id}")
        if payout.status != "pending":
            return _outcome(payout)
        payee = self.get_payee(payout.payee_id)
        if payee is None:
            raise LedgerInvariantError(f"payout {payout_id} names no payee")
        exponent = self.processor.minor_exponent(payout.currency)
        minor, remainder = to_minor_units(payout.amount_micros, exponent, Rounding.DOWN)
        if remainder:
            raise LedgerInvariantError("a payout must be a whole number of minor units")
        result = self.processor.payout(
            PayoutRequest(
                idempotency_key=f"micropay-payout-{payout.id}",
                destination_token=payee.destination_token,
                amount_minor=minor,
                currency=payout.currency,
                description=f"micropay {payout.purpose}",
            )
        )
        if result.outcome is Outcome.retry:
            return _outcome(payout)  # still pending; the next run asks again, same key

        def record(tx: PaymentsWriteTx) -> PayoutOutcome:
            sql = self.bind(tx)
            paid = result.outcome is Outcome.succeeded
            now_us = self.clock()
            status = "succeeded" if paid else "declined"
            if sql.finish_payout(payout.id, status, result.payout_id if paid else "", now_us):
                code = (
                    PayoutCode.payout if payout.purpose == "earnings" else PayoutCode.micro_deposit
                )
                resolve = resolve_hold(
                    self.new_id(), payout.hold_transfer_id, code, f"payout:{payout.id}", paid=paid
                )
                _apply(tx, [resolve], now_us, f"payout {payout.id} outcome")
            final = sql.get_payout(payout.id)
            if final is None:
                raise LedgerInvariantError(f"payout {payout.id} vanished")
            return _outcome(final)

        return self.tx(record)

    # --- micro-deposit verification ----------------------------------------------

    def start_verification(self, payee_id: int) -> VerificationOutcome:
        """Send two random amounts below one unit to the payee's bank account."""
        now_us = self.clock()

        def start(tx: PaymentsWriteTx) -> VerificationOutcome | list[int]:
            sql = self.bind(tx)
            payee = sql.get_payee(payee_id)
            if payee is None:
                return VerificationOutcome(VerificationStatus.payee_not_found)
            if payee.verified:
                return VerificationOutcome(VerificationStatus.already_verified)
            found = sql.get_verification(payee_id)
            if found is not None:
                if found.status == "locked":
                    return VerificationOutcome(VerificationStatus.locked)
                return VerificationOutcome(VerificationStatus.already_started)
            exponent = self.processor.minor_exponent(payee.currency)
            top = min(micro_deposit_minor_max, 10**exponent - 1)
            if top < 1:
                raise PayoutsInputError("micro-deposits need a currency with a minor unit")
            amounts = [from_minor_units(self._rng.randint(1, top), exponent) for _ in range(2)]
            sql.insert_verification(
                Verification(payee_id, amounts[0], amounts[1], 0, "pending"), now_us
            )
            return [
                self._new_payout(
                    tx, payee, "micro_deposit", f"verify:{n}", amount, Bucket.deposits, now_us
                )
                for n, amount in enumerate(amounts, start=1)
            ]

        started = self.tx(start)
        if isinstance(started, VerificationOutcome):
            return started
        for payout_id in started:
            self.execute(payout_id)
        return VerificationOutcome(VerificationStatus.deposits_sent, self.verification_attempts_max)

    def confirm_deposits(
        self, payee_id: int, first_micros: int, second_micros: int
    ) -> VerificationOutcome:
        """The payee reports the two amounts (in any order). A wrong guess uses an attempt.

        When right, both deposits are taken back from the payee's earnings (which
        may leave a small debt that the next earnings repay) and payouts open.
        """
        if type(first_micros) is not int or type(second_micros) is not int:
            return VerificationOutcome(VerificationStatus.amount_invalid)
        now_us = self.clock()

        def confirm(tx: PaymentsWriteTx) -> VerificationOutcome:
            sql = self.bind(tx)
            payee = sql.get_payee(payee_id)
            if payee is None:
                return VerificationOutcome(VerificationStatus.payee_not_found)
            tx.lock_accounts(
                [payee_account(payee.id, b, payee.currency) for b in Bucket]
            )  # serializes guesses of one payee
            found = sql.get_verification(payee_id)
            if found is None:
                return VerificationOutcome(VerificationStatus.not_started)
            if found.status == "verified":
                return VerificationOutcome(VerificationStatus.already_verified)
            if found.status == "locked":
                return VerificationOutcome(VerificationStatus.locked)
            sent = [sql.find_payout(payee.id, "micro_deposit", f"verify:{n}") for n in (1, 2)]
            if any(p is None or p.status != "succeeded" for p in sent):
                return VerificationOutcome(VerificationStatus.deposits_not_settled)
            attempts = found.attempts + 1
            right = sorted((first_micros, second_micros)) == sorted(
                (found.first_micros, found.second_micros)
            )
            if right:
                sql.update_verification(payee.id, attempts, "verified", found.attempts, now_us)
                sql.set_payee_verified(payee.id)
                back = take_back_transfer(
                    self.new_id(),
                    payee.id,
                    found.first_micros + found.second_micros,
                    payee.currency,
                    f"verify:{payee.id}",
                )
                _apply(tx, [back], now_us, "micro-deposit take-back")
                return VerificationOutcome(VerificationStatus.verified)
            left = self.verification_attempts_max - attempts
            status = "locked" if left <= 0 else "pending"
            if not sql.update_verification(payee.id, attempts, status, found.attempts, now_us):
                raise LedgerInvariantError("verification changed under its lock")
            if left <= 0:
                return VerificationOutcome(VerificationStatus.locked)
            return VerificationOutcome(VerificationStatus.wrong_amounts, left)

        return self.tx(confirm)

    # --- statements ------------------------------------------------------------------

    def balances(self, payee_id: int) -> dict[Bucket, int]:
        """The payee's balance in each bucket (credit-normal: negative is a debt)."""
        payee = self.get_payee(payee_id)
        if payee is None:
            raise KeyError(f"no payee {payee_id}")
        ids = {b: payee_account(payee_id, b, payee.currency) for b in Bucket}
        accounts = self.payments.ledger.accounts(list(ids.values()))
        return {b: available_micros(accounts[i]) for b, i in ids.items()}

    def statement_csv(self, payee_id: int, start_us: int, end_us: int) -> str:
        """Every posted movement of the payee's accounts in [start, end), with running balances.

        Columns: time (UTC, ISO 8601), account (pending|available|deposits),
        movement, reference, amount (credit positive), balance of that account.
        """
        payee = self.get_payee(payee_id)
        if payee is None:
            raise KeyError(f"no payee {payee_id}")
        bucket_of = {payee_account(payee_id, b, payee.currency): b for b in Bucket}
        balance: dict[Bucket, int] = defaultdict(int)
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(["time", "account", "movement", "reference", "amount", "balance"])
        skipped = int(
            TransferFlags.PENDING | TransferFlags.VOID_PENDING | TransferFlags.EXPIRE_PENDING
        )
        with self.store.read() as reader:
            for t in reader.iter_transfers():
                if t.created_at_us >= end_us:
                    break
                if t.flags & skipped:
                    continue
                for account_id, sign in ((t.debit_account_id, -1), (t.credit_account_id, 1)):
                    bucket = bucket_of.get(account_id)
                    if bucket is None:
                        continue
                    balance[bucket] += sign * t.amount_micros
                    if t.created_at_us < start_us:
                        continue
                    writer.writerow(
                        [
                            dt.datetime.fromtimestamp(t.created_at_us / 1e6, tz=dt.UTC).isoformat(),
                            bucket.name,
                            _movement(t.code),
                            t.reference,
                            format_amount(sign * t.amount_micros, t.currency),
                            format_amount(balance[bucket], t.currency),
                        ]
                    )
        return out.getvalue()


def reconcile_payouts(
    store: PaymentsStore,
    processor_payouts: Mapping[str, tuple[int, str]],
    exponent_of: Mapping[str, int] | None = None,
    *,
    bind: Binder = mixed_in,
) -> list[Violation]:
    """Compare the processor's payouts (id -> (minor units, currency)) with ours and the ledger.

    Every succeeded payout is at the processor for the same amount and posted
    exactly once in the ledger; nothing else is posted; the processor paid
    nothing we do not know.
    """
    problems: list[str] = []
    with store.write() as tx:
        records = bind(tx).payouts_for_reconcile()
    posted: dict[int, list[int]] = defaultdict(list)
    with store.read() as reader:
        for t in reader.iter_transfers():
            if t.reference.startswith("payout:") and t.flags & TransferFlags.POST_PENDING:
                posted[int(t.reference.removeprefix("payout:"))].append(t.amount_micros)
    seen: set[str] = set()
    for payout in records:
        if payout.status != "succeeded":
            if posted.get(payout.id):
                problems.append(f"payout {payout.id} is {payout.status} but was posted")
            continue
        seen.add(payout.processor_payout_id)
        at_processor = processor_payouts.get(payout.processor_payout_id)
        if at_processor is None:
            problems.append(
                f"payout {payout.id}: the processor has no {payout.processor_payout_id}"
            )
        elif from_minor_units(
            at_processor[0], (exponent_of or {}).get(payout.currency, 2)
        ) != payout.amount_micros or (at_processor[1] != payout.currency):
            problems.append(f"payout {payout.id}: processor amount differs")
        if posted.get(payout.id) != [payout.amount_micros]:
            problems.append(f"payout {payout.id}: posted {posted.get(payout.id)} in the ledger")
    for processor_id in sorted(set(processor_payouts) - seen):
        problems.append(f"processor payout {processor_id} is not in the ledger")
    return [Violation(CHECK, p) for p in problems]


def _apply(tx: PaymentsWriteTx, plan: list[Transfer], now_us: int, what: str) -> None:
    if not plan:
        return
    results = apply_in_transaction(tx, plan, now_us)
    if not all(r.ok for r in results):
        raise LedgerInvariantError(f"{what} refused: {[r.status.value for r in results]}")


def _share_accounts(shares: Sequence[SaleShare], currency: str) -> list[int]:
    return sorted(
        payee_account(s.payee_id, b, currency)
        for s in shares
        for b in (Bucket.pending, Bucket.available)
    )


def _sale_currency(sql: PayoutsTx, purchase_id: int) -> str:
    sale = sql.get_sale(purchase_id)
    if sale is None:
        raise LedgerInvariantError(f"share of missing sale {purchase_id}")
    return sale.currency


def _outcome(p: PayoutRecord) -> PayoutOutcome:
    return PayoutOutcome(p.id, p.payee_id, PayoutStatus(p.status), p.amount_micros)


def _movement(code: int) -> str:
    try:
        return PayoutCode(code).name
    except ValueError:
        return str(code)
