"""Scheduled, manual and pending payouts: start, ask the processor, record the outcome."""

from __future__ import annotations

from micropay.core.accounts import available_micros
from micropay.core.money import Rounding, to_minor_units
from micropay.payments.processor import Outcome, PayoutRequest
from micropay.payouts.plans import (
    Bucket,
    Payee,
    PayoutCode,
    PayoutRecord,
    Schedule,
    payee_account,
    payout_hold,
    period_key,
    resolve_hold,
)
from micropay.service.charges import LedgerInvariantError
from micropay.service.payouts.base import (
    PayoutOutcome,
    PayoutsBase,
    Progress,
    apply_plan,
    no_progress,
    outcome_of,
    payees_per_run_max,
    payouts_per_run_max,
)
from micropay.service.ports import PaymentsWriteTx


class RunsMixin(PayoutsBase):
    """Payouts: this period's per payee, manual ones, and asking the processor."""

    # --- payouts -------------------------------------------------------------------

    def run_payouts(
        self, limit: int = payees_per_run_max, progress: Progress = no_progress
    ) -> list[PayoutOutcome]:
        """Pay every verified, scheduled payee at or above threshold, once per period.

        Also finishes payouts left pending by an earlier run (crash, timeout), with
        their original idempotency key. Returns the outcomes of the payouts asked.
        """
        self.start_scheduled(limit, progress)
        return self.run_pending(progress=progress)

    def start_scheduled(
        self, limit: int = payees_per_run_max, progress: Progress = no_progress
    ) -> int:
        """Record this period's payout (pending, its amount held) of every payee due one.

        Nothing is asked of the processor here (see :meth:`run_pending`). Returns
        how many payees were looked at; ``progress`` is called after each page.
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
            progress()
        return started

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
        apply_plan(tx, [hold], now_us, f"payout {payout_id} hold")
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

    def run_pending(
        self, limit: int = payouts_per_run_max, progress: Progress = no_progress
    ) -> list[PayoutOutcome]:
        """Ask the processor for each pending payout (its own key) and record the outcomes.

        ``progress`` is called after each payout (a worker renews its lease there).
        """
        ids = self.tx(lambda tx: self.bind(tx).pending_payouts(min(limit, payouts_per_run_max)))
        outcomes = []
        for payout_id in ids:
            outcomes.append(self.execute(payout_id))
            progress()
        return outcomes

    def execute(self, payout_id: int) -> PayoutOutcome:
        """Ask the processor to pay a pending payout and record the outcome (idempotent)."""
        payout = self.tx(lambda tx: self.bind(tx).get_payout(payout_id))
        if payout is None:
            raise KeyError(f"no payout {payout_id}")
        if payout.status != "pending":
            return outcome_of(payout)
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
            return outcome_of(payout)  # still pending; the next run asks again, same key

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
                apply_plan(tx, [resolve], now_us, f"payout {payout.id} outcome")
            final = sql.get_payout(payout.id)
            if final is None:
                raise LedgerInvariantError(f"payout {payout.id} vanished")
            return outcome_of(final)

        return self.tx(record)
