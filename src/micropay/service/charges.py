"""Processor charges: top-ups, tab settlements and direct purchases, exactly once.

A charge is a two-step affair, because no database transaction may stay open
across a network call:

1. record the charge as ``pending`` (with its fee and the ledger legs to post),
   and commit;
2. ask the processor with an idempotency key derived from the charge id and
   its decline count;
3. record the outcome in one transaction: on success post the legs
   (processor clearing -> wallet / tab / merchant, and the fee), and only once
   (``finish_charge`` moves ``pending`` to final at most once).

If the process dies after 2, the charge stays ``pending`` and
:meth:`ChargeEngine.run_due` asks again with the *same* key: the processor
returns the first result, so nothing is charged twice and nothing is lost. A
decline of a tab settlement starts dunning: the tab freezes and the charge is
retried with back-off (each retry a new key), until paid or out of attempts.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from micropay.core import limits
from micropay.core.accounts import Account
from micropay.core.money import Rounding, to_minor_units
from micropay.fees.schedules import FeeSchedule, cheapest
from micropay.payments import chart
from micropay.payments.models import Customer, TabPolicy, TabState
from micropay.payments.plans import Code, charge_settled
from micropay.payments.processor import ChargeRequest, ChargeResult, Outcome
from micropay.payments.records import ChargePurpose, ChargeRecord, ChargeStatus
from micropay.service.ids import IdGenerator
from micropay.service.ledger import Clock, apply_in_transaction
from micropay.service.ports import PaymentsStore, PaymentsWriteTx, Processor
from micropay.service.retry import run_with_retries

T = TypeVar("T")
retry_backoff_s = 60
due_charges_per_run_max = 1_000
charges_per_tx = 100  # period-end settlements recorded/finished per transaction


class LedgerInvariantError(RuntimeError):
    """A plan the service built was refused by the ledger: a bug, never a business outcome."""


@dataclass(frozen=True, slots=True)
class ChargeOutcome:
    charge_id: int
    status: ChargeStatus
    decline_code: str = ""


def request_hash(*parts: object) -> str:
    """A stable fingerprint of a request, to tell a retry from a different request."""
    return hashlib.sha256(repr(parts).encode()).hexdigest()


def tab_owed_micros(tab: Account) -> int:
    """What the customer owes on a tab account (its debit balance; 0 if in credit)."""
    return max(0, tab.debits_posted_micros + tab.debits_pending_micros - tab.credits_posted_micros)


class ChargeEngine:
    def __init__(
        self,
        store: PaymentsStore,
        processor: Processor,
        *,
        clock: Clock,
        new_id: IdGenerator,
        schedules: list[FeeSchedule],
        tab_policy: TabPolicy,
    ) -> None:
        self.store = store
        self.processor = processor
        self.clock = clock
        self.new_id = new_id
        self.schedules = schedules
        self.tab_policy = tab_policy
        # Set by the purchase service: grants the entitlement once a direct charge is paid.
        self.direct_paid: Callable[[PaymentsWriteTx, int, int], None] | None = None
        # Called with (tx, outcome, charge) in the transaction that records a charge's
        # outcome ("succeeded", "declined", "tab_frozen"): the webhooks' outbox attaches here.
        self.outcome_hooks: list[Callable[[PaymentsWriteTx, str, ChargeRecord], object]] = []

    def _run_outcome_hooks(self, tx: PaymentsWriteTx, outcome: str, charge: ChargeRecord) -> None:
        for hook in self.outcome_hooks:
            hook(tx, outcome, charge)

    def tx(self, operation: Callable[[PaymentsWriteTx], T]) -> T:
        def once() -> T:
            with self.store.write() as tx:
                return operation(tx)

        return run_with_retries(once)

    # --- recording and running charges ---------------------------------

    def schedule_for(self, amount_micros: int, currency: str) -> FeeSchedule | None:
        usable = [s for s in self.schedules if s.currency == currency]
        try:
            return cheapest(usable, amount_micros)
        except ValueError:
            return None

    def new_charge(
        self,
        customer: Customer,
        purpose: ChargePurpose,
        amount_micros: int,
        currency: str,
        *,
        client_key: str | None,
        fingerprint: str,
        purchase_id: int = 0,
    ) -> ChargeRecord | None:
        """A pending charge record, or None when no fee schedule can charge this amount."""
        schedule = self.schedule_for(amount_micros, currency)
        if schedule is None:
            return None
        now_us = self.clock()
        return ChargeRecord(
            id=self.new_id(),
            customer_id=customer.id,
            purpose=purpose.value,
            client_key=client_key,
            request_hash=fingerprint,
            amount_micros=amount_micros,
            currency=currency,
            fee_micros=schedule.fee_micros(amount_micros),
            schedule=schedule.name,
            status=ChargeStatus.pending.value,
            processor_charge_id="",
            decline_code="",
            attempts=0,
            next_attempt_at_us=now_us,
            purchase_id=purchase_id,
            created_at_us=now_us,
            updated_at_us=now_us,
        )

    def run(self, charge_id: int) -> ChargeOutcome:
        """Ask the processor for a pending charge and record the outcome (idempotent)."""
        return self.run_many([charge_id])[0]

    def run_many(self, charge_ids: list[int]) -> list[ChargeOutcome]:
        """``run`` for many charges: one transaction to load them, the processor calls (in
        no transaction), one transaction to record the outcomes."""

        def load(tx: PaymentsWriteTx) -> list[tuple[ChargeRecord | None, Customer | None]]:
            loaded = []
            for charge_id in charge_ids:
                found = tx.get_charge(charge_id)
                customer = tx.get_customer(found.customer_id) if found is not None else None
                loaded.append((found, customer))
            return loaded

        asked: list[tuple[int, ChargeResult]] = []
        outcomes: dict[int, ChargeOutcome] = {}
        for charge_id, (charge, customer) in zip(charge_ids, self.tx(load), strict=True):
            if charge is None:
                raise KeyError(f"no charge {charge_id}")
            if charge.status != ChargeStatus.pending.value:
                outcomes[charge_id] = ChargeOutcome(
                    charge.id, ChargeStatus(charge.status), charge.decline_code
                )
                continue
            if customer is None:
                raise KeyError(f"charge {charge_id} names no customer")
            asked.append((charge_id, self._ask(charge, customer)))

        def record(tx: PaymentsWriteTx) -> list[ChargeOutcome]:
            return [self._record(tx, charge_id, result) for charge_id, result in asked]

        if asked:
            for outcome in self.tx(record):
                outcomes[outcome.charge_id] = outcome
        return [outcomes[charge_id] for charge_id in charge_ids]

    def _ask(self, charge: ChargeRecord, customer: Customer) -> ChargeResult:
        exponent = self.processor.minor_exponent(charge.currency)
        minor, remainder = to_minor_units(charge.amount_micros, exponent, Rounding.DOWN)
        if remainder:
            raise ValueError("a charge must be a whole number of minor units")
        return self.processor.charge(
            ChargeRequest(
                idempotency_key=f"micropay-charge-{charge.id}-{charge.attempts}",
                customer_token=customer.processor_customer_token,
                payment_method_token=customer.payment_method_token,
                amount_minor=minor,
                currency=charge.currency,
                description=f"micropay {charge.purpose}",
                metadata={"charge": str(charge.id)},
            )
        )

    def run_due(self, limit: int = due_charges_per_run_max) -> list[ChargeOutcome]:
        """Run every pending charge whose next attempt is due (crash recovery and dunning)."""
        now_us = self.clock()
        ids = self.tx(lambda tx: tx.due_charges(now_us, min(limit, due_charges_per_run_max)))
        outcomes = []
        for start in range(0, len(ids), charges_per_tx):
            outcomes += self.run_many(ids[start : start + charges_per_tx])
        return outcomes

    def _record(self, tx: PaymentsWriteTx, charge_id: int, result: ChargeResult) -> ChargeOutcome:
        charge = tx.get_charge(charge_id)
        if charge is None:
            raise KeyError(f"no charge {charge_id}")
        if charge.status != ChargeStatus.pending.value:
            return ChargeOutcome(charge.id, ChargeStatus(charge.status), charge.decline_code)
        now_us = self.clock()
        if result.outcome is Outcome.succeeded:
            tx.finish_charge(charge.id, ChargeStatus.succeeded.value, result.charge_id, "", now_us)
            self._post_success(tx, charge, now_us)
            self._run_outcome_hooks(tx, "succeeded", charge)
            return ChargeOutcome(charge.id, ChargeStatus.succeeded)
        if result.outcome is Outcome.retry:
            wait_s = max(retry_backoff_s, int(result.retry_after_s))
            tx.reschedule_charge(charge.id, now_us + wait_s * 1_000_000, now_us, declined=False)
            return ChargeOutcome(charge.id, ChargeStatus.pending)
        return self._record_decline(tx, charge, result.decline_code or "declined", now_us)

    def _record_decline(
        self, tx: PaymentsWriteTx, charge: ChargeRecord, code: str, now_us: int
    ) -> ChargeOutcome:
        if charge.purpose == ChargePurpose.tab.value:
            customer = tx.get_customer(charge.customer_id)
            if customer is not None and customer.tab_state is not TabState.frozen:
                tx.update_customer_tab(
                    customer.id,
                    customer.tab_limit_micros,
                    TabState.frozen,
                    customer.tab_opened_at_us,
                )
                self._run_outcome_hooks(tx, "tab_frozen", charge)
            backoff = self.tab_policy.dunning_backoff_s
            if charge.attempts < len(backoff):
                next_at = now_us + backoff[charge.attempts] * 1_000_000
                tx.reschedule_charge(charge.id, next_at, now_us, declined=True)
                return ChargeOutcome(charge.id, ChargeStatus.pending, code)
        tx.finish_charge(charge.id, ChargeStatus.declined.value, "", code, now_us)
        self._run_outcome_hooks(tx, "declined", charge)
        if charge.purpose == ChargePurpose.direct.value and charge.purchase_id:
            tx.complete_purchase(charge.purchase_id, "charge_declined", None)
        return ChargeOutcome(charge.id, ChargeStatus.declined, code)

    def _post_success(self, tx: PaymentsWriteTx, charge: ChargeRecord, now_us: int) -> None:
        purpose = ChargePurpose(charge.purpose)
        if purpose is ChargePurpose.topup:
            credit = chart.wallet_account(charge.customer_id, charge.currency)
            code = Code.topup
        elif purpose is ChargePurpose.tab:
            credit = chart.tab_account(charge.customer_id, charge.currency)
            code = Code.tab_settlement
        else:
            purchase = tx.get_purchase(charge.purchase_id)
            if purchase is None:
                raise LedgerInvariantError(f"direct charge {charge.id} has no purchase")
            credit = chart.payable_account(purchase.merchant_id, charge.currency)
            code = Code.direct_charge
        legs = charge_settled(
            (self.new_id(), self.new_id()),
            credit,
            charge.amount_micros,
            charge.fee_micros,
            charge.currency,
            code,
            reference=f"charge:{charge.id}",
        )
        results = apply_in_transaction(tx, legs, now_us)
        if not all(r.ok for r in results):
            raise LedgerInvariantError(f"charge {charge.id} legs refused: {results}")
        if purpose is ChargePurpose.tab:
            self._tab_paid(tx, charge, now_us)
        elif purpose is ChargePurpose.direct:
            tx.complete_purchase(charge.purchase_id, "ok", legs[0].id)
            if self.direct_paid is not None:
                self.direct_paid(tx, charge.purchase_id, now_us)

    def _tab_paid(self, tx: PaymentsWriteTx, charge: ChargeRecord, now_us: int) -> None:
        """The trust ladder: paid without dunning raises the limit; any payment unfreezes."""
        customer = tx.get_customer(charge.customer_id)
        if customer is None:
            raise LedgerInvariantError(f"tab charge {charge.id} names no customer")
        limit = customer.tab_limit_micros
        if charge.attempts == 0:
            raised = self.tab_policy.raised_limit(limit)
            tab_id = chart.tab_account(customer.id, charge.currency)
            if raised != limit and tx.set_credit_limit(tab_id, raised):
                limit = raised
        tx.update_customer_tab(customer.id, limit, TabState.open, now_us)

    # --- tabs ------------------------------------------------------------

    def start_tab_settlement(self, customer_id: int, *, forced: bool) -> int | None:
        """Record a charge for what the tab owes (rounded down to the minor unit).

        The sub-cent remainder stays on the tab. Returns the charge id, the
        already pending settlement's id, or None when there is nothing to charge
        (or, unless ``forced``, less than the policy's period minimum).
        """

        def record(tx: PaymentsWriteTx) -> int | None:
            customer = tx.get_customer(customer_id)
            return None if customer is None else self._start_tab_in(tx, customer, forced=forced)

        return self.tx(record)

    def _start_tab_in(self, tx: PaymentsWriteTx, customer: Customer, *, forced: bool) -> int | None:
        pending = tx.pending_charge(customer.id, ChargePurpose.tab.value)
        if pending is not None:
            return pending.id
        tab_id = chart.tab_account(customer.id, customer.currency)
        tab = tx.lock_accounts([tab_id]).get(tab_id)
        if tab is None:
            return None
        exponent = self.processor.minor_exponent(customer.currency)
        minor, _remainder = to_minor_units(tab_owed_micros(tab), exponent, Rounding.DOWN)
        amount = tab_owed_micros(tab) - _remainder
        if minor <= 0 or (not forced and amount < self.tab_policy.period_minimum_micros):
            return None
        charge = self.new_charge(
            customer,
            ChargePurpose.tab,
            amount,
            customer.currency,
            client_key=None,
            fingerprint=request_hash("tab", customer.id, amount, self.clock()),
        )
        if charge is None:
            return None
        tx.insert_charge(charge)
        return charge.id

    def settle_tab(self, customer_id: int, *, forced: bool = True) -> ChargeOutcome | None:
        charge_id = self.start_tab_settlement(customer_id, forced=forced)
        return None if charge_id is None else self.run(charge_id)

    def close_tab_periods(self, limit: int = limits.page_rows_max) -> list[ChargeOutcome]:
        """At each tab's period end: charge it if it owes at least the period minimum.

        A smaller balance carries over, until the tab is ``carry_max_age_s`` old,
        when it is charged anyway. A tab that owes nothing starts a new period.
        """
        now_us = self.clock()
        policy = self.tab_policy
        due = self.tx(
            lambda tx: tx.customers_with_tab_period_ended(
                now_us - policy.period_s * 1_000_000, limit
            )
        )
        outcomes = []
        for start in range(0, len(due), charges_per_tx):
            chunk = due[start : start + charges_per_tx]
            started = self.tx(lambda tx, c=chunk: self._close_periods_in(tx, c, now_us))  # type: ignore[misc]
            outcomes += self.run_many(started)
        return outcomes

    def _close_periods_in(
        self, tx: PaymentsWriteTx, customer_ids: list[int], now_us: int
    ) -> list[int]:
        """Record the period-end charge of each tab that owes enough; restart the others."""
        carry_max_us = self.tab_policy.carry_max_age_s * 1_000_000
        started = []
        for customer_id in customer_ids:
            customer = tx.get_customer(customer_id)
            if customer is None or customer.tab_state is TabState.frozen:
                continue
            too_old = now_us - customer.tab_opened_at_us >= carry_max_us
            charge_id = self._start_tab_in(tx, customer, forced=too_old)
            if charge_id is None:
                _restart_period_if_clear(tx, customer, now_us)
            else:
                started.append(charge_id)
        return started


def _restart_period_if_clear(tx: PaymentsWriteTx, customer: Customer, now_us: int) -> None:
    tab_id = chart.tab_account(customer.id, customer.currency)
    tab = tx.lock_accounts([tab_id]).get(tab_id)
    if tab is not None and tab_owed_micros(tab) == 0:
        tx.update_customer_tab(customer.id, customer.tab_limit_micros, customer.tab_state, now_us)
