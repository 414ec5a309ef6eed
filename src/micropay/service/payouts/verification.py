"""Micro-deposit verification of a payee's bank account."""

from __future__ import annotations

from micropay.core.money import from_minor_units
from micropay.payouts.plans import (
    Bucket,
    Verification,
    payee_account,
    take_back_transfer,
)
from micropay.service.charges import LedgerInvariantError
from micropay.service.payouts.base import (
    PayoutsInputError,
    VerificationOutcome,
    VerificationStatus,
    apply_plan,
    micro_deposit_minor_max,
)
from micropay.service.payouts.runs import RunsMixin
from micropay.service.ports import PaymentsWriteTx


class VerificationMixin(RunsMixin):
    """Micro-deposit verification: two small payouts the payee must confirm."""

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
                apply_plan(tx, [back], now_us, "micro-deposit take-back")
                return VerificationOutcome(VerificationStatus.verified)
            left = self.verification_attempts_max - attempts
            status = "locked" if left <= 0 else "pending"
            if not sql.update_verification(payee.id, attempts, status, found.attempts, now_us):
                raise LedgerInvariantError("verification changed under its lock")
            if left <= 0:
                return VerificationOutcome(VerificationStatus.locked)
            return VerificationOutcome(VerificationStatus.wrong_amounts, left)

        return self.tx(confirm)
