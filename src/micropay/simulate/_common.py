"""What the music, api and creator months share: a run (service, store, processor,
clock), customers by payment preference, the fee report, exposure and the oracles.

Fees are measured like the news month (``simulate/news.py``): ``fees_micros`` is
the fee cost of the month's spending -- fees paid, minus the share of each
wallet's last top-up fee that the money still unspent at month end carries,
plus, for what tabs still owe, the fee of the charge that will collect it.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micropay.core.accounts import available_micros
from micropay.core.transfers import TransferFlags
from micropay.fees.schedules import FeeSchedule
from micropay.payments import chart
from micropay.payments.models import PurchaseStatus, TabPolicy
from micropay.payments.processor import PayoutRequest, PayoutResult
from micropay.payments.records import ChargeStatus
from micropay.payouts.plans import PayoutCode
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.service.payouts import Payouts, reconcile_payouts
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.settlement.planner import Plan, charge_fee_micros
from micropay.simulate.adapter import enable_auto_reload
from micropay.simulate.basics import CURRENCY, DAY_S, KINDS, START_US, SimClock, no_tab
from micropay.store import open_store
from micropay.store.migrate import upgrade
from micropay.store.payouts_sql import bind_payouts_sql

SECOND_US = 1_000_000


class PayoutBook(SimulatedProcessor):
    """The simulated rail, also keeping what it paid to each bank account (the payee's
    bank statement, which is where a payee reads its micro-deposits)."""

    def __init__(self) -> None:
        super().__init__()
        self.to: dict[str, list[int]] = defaultdict(list)
        self._asked: set[str] = set()

    def payout(self, request: PayoutRequest) -> PayoutResult:
        result = super().payout(request)
        if request.idempotency_key not in self._asked:  # a retry with the same key pays once
            self._asked.add(request.idempotency_key)
            self.to[request.destination_token].append(request.amount_minor)
        return result


@dataclass
class Run:
    """One policy's service, store and tallies."""

    name: str
    plan: Plan
    payments: Payments
    processor: PayoutBook
    clock: SimClock
    payouts: Payouts
    customer_ids: list[int] = field(default_factory=list)
    kind_of: dict[int, str] = field(default_factory=dict)  # customer id -> preference
    gross: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    purchases: int = 0
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))

    def at(self, day: int, second: int, micro: int = 0) -> None:
        self.clock.now_us = START_US + (day * DAY_S + second) * SECOND_US + micro

    def day_end(self, day: int) -> None:
        """The last second of ``day`` (still the same UTC date and ISO week)."""
        self.at(day, DAY_S - 1)


def new_run(
    name: str, chosen: Plan, directory: Path, *, tab_policy: TabPolicy | None = None
) -> Run:
    """A fresh SQLite store, the simulated processor and a hand-moved clock."""
    url = f"sqlite:///{directory / f'{name}.db'}"
    upgrade(url)
    store: Any = open_store(url)
    clock = SimClock()
    processor = PayoutBook()
    payments = Payments(store, processor, clock=clock, tab_policy=tab_policy)
    payouts = Payouts(payments, rng=random.Random(7), bind=bind_payouts_sql, attach=True)
    return Run(name, chosen, payments, processor, clock, payouts)


def zipf_weights(n: int, exponent: float) -> list[float]:
    """Cumulative weights of a popularity curve: the first is the most popular."""
    total, cum = 0.0, []
    for rank in range(n):
        total += 1.0 / (rank + 1) ** exponent
        cum.append(total)
    return cum


def add_customers(run: Run, kinds: Sequence[str], *, reload_plans: Sequence[Plan] = ()) -> None:
    """One customer per preference; wallets get auto-reload at their plan's top-up."""
    p = run.payments
    for i, kind in enumerate(kinds):
        customer = p.create_customer(
            CURRENCY,
            processor_customer_token=f"cus_{i}",
            payment_method_token=f"pm_{i}",
            also=no_tab if kind == "direct" else None,
        )
        run.customer_ids.append(customer.id)
        run.kind_of[customer.id] = kind
        if kind == "wallet":
            enable_auto_reload(p, customer.id, reload_plans[i] if reload_plans else run.plan)


def buy(run: Run, customer: int, merchant_id: int, item_ref: str, key: str) -> int:
    """One purchase by customer index ``customer``; its purchase id when newly paid, else 0."""
    receipt = run.payments.purchase(merchant_id, run.customer_ids[customer], item_ref, key)
    if receipt.status is PurchaseStatus.ok and not receipt.replayed:
        run.gross[run.kind_of[run.customer_ids[customer]]] += receipt.price_micros
        run.purchases += 1
        return receipt.purchase_id
    if receipt.status is not PurchaseStatus.already_entitled:
        run.refused[receipt.status.value] += 1
    return 0


def verify_payee(run: Run, payee_id: int, destination: str) -> bool:
    """Micro-deposit verification done right, reading the amounts off the bank statement."""
    run.payouts.start_verification(payee_id)
    sent = run.processor.to.get(destination, [])[:2]
    if len(sent) < 2:
        return False
    first, second = (minor * 10_000 for minor in sent)
    return run.payouts.confirm_deposits(payee_id, second, first).status.value == "verified"


def pay_out(run: Run) -> None:
    """Release every share past its hold, then run the scheduled payouts."""
    while run.payouts.release_due():
        pass
    run.payouts.run_payouts()


def payout_records(run: Run) -> list[Any]:
    with run.payments.store.write() as tx:
        records: list[Any] = bind_payouts_sql(tx).payouts_for_reconcile()
    return records


def payout_facts(run: Run) -> dict[str, Any]:
    """Earnings payouts made, and the oracle: processor payouts equal ledger payouts."""
    records = payout_records(run)
    earnings = [r for r in records if r.purpose == "earnings" and r.status == "succeeded"]
    per_period: dict[tuple[int, str], int] = defaultdict(int)
    for r in earnings:
        per_period[(r.payee_id, r.period_key)] += 1
    problems = reconcile_payouts(
        run.payments.store, run.processor.succeeded_payouts(), bind=bind_payouts_sql
    )
    return {
        "payouts": len(earnings),
        "payouts_micros": sum(r.amount_micros for r in earnings),
        "payees_paid": len({r.payee_id for r in earnings}),
        "duplicate_payouts": sum(n - 1 for n in per_period.values() if n > 1),
        "micro_deposits": sum(
            1 for r in records if r.purpose == "micro_deposit" and r.status == "succeeded"
        ),
        "payouts_pending": sum(1 for r in records if r.status == "pending"),
        "payout_violations": [str(v) for v in problems][:10],
    }


def sale_share_legs(run: Run) -> dict[str, list[tuple[int, int]]]:
    """Each sale's shares as posted in the ledger: reference -> [(credit account, amount)]."""
    legs: dict[str, list[tuple[int, int]]] = defaultdict(list)
    with run.payments.store.read() as reader:
        for t in reader.iter_transfers():
            if t.code == int(PayoutCode.sale_share) and not t.flags & TransferFlags.PENDING:
                legs[t.reference].append((t.credit_account_id, t.amount_micros))
    return legs


def fee_report(run: Run, schedules: Sequence[FeeSchedule], tab_limit_micros: int) -> dict[str, Any]:
    """Card charges and fees by preference, fees of the month, and both charge oracles."""
    p = run.payments
    with p.store.write() as tx:
        charges = tx.charges_for_reconcile()
    paid: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    last_topup: dict[int, tuple[int, int]] = {}
    for c in sorted(charges, key=lambda c: (c.created_at_us, c.id)):
        if c.status != ChargeStatus.succeeded.value:
            continue
        kind = run.kind_of[c.customer_id]
        paid[kind] += c.fee_micros
        count[kind] += 1
        if c.purpose == "topup":
            last_topup[c.customer_id] = (c.amount_micros, c.fee_micros)
    wallets = [chart.wallet_account(cid, CURRENCY) for cid in run.customer_ids]
    tabs = [chart.tab_account(cid, CURRENCY) for cid in run.customer_ids]
    accounts = p.ledger.accounts(wallets + tabs)
    attributed = dict(paid)
    unspent_total = owed_total = 0
    limit = max(tab_limit_micros, 10_000)
    tab_fee = charge_fee_micros(schedules, limit)
    for cid in run.customer_ids:
        kind = run.kind_of[cid]
        unspent = available_micros(accounts[chart.wallet_account(cid, CURRENCY)])
        if unspent and cid in last_topup:
            amount, fee = last_topup[cid]
            attributed[kind] = attributed.get(kind, 0) - fee * unspent // amount
            unspent_total += unspent
        tab = accounts[chart.tab_account(cid, CURRENCY)]
        owed = max(0, tab.debits_posted_micros - tab.credits_posted_micros)
        if owed:
            attributed[kind] = attributed.get(kind, 0) + -(-owed * tab_fee // limit)
            owed_total += owed
    gross = sum(run.gross.values())
    fees = sum(attributed.values())
    report = reconcile(p.store)
    processor_problems = reconcile_processor(p.store, run.processor.succeeded_charges())
    return {
        "gross_micros": gross,
        "purchases": run.purchases,
        "fees_micros": fees,
        "fees_paid_micros": sum(paid.values()),
        "effective_fee": fees / gross if gross else 0.0,
        "effective_fee_paid": sum(paid.values()) / gross if gross else 0.0,
        "card_charges": sum(count.values()),
        "unspent_wallet_micros": unspent_total,
        "tabs_owed_micros": owed_total,
        "tab_limit_micros": run.plan.tab_limit_micros,
        "tab_carry": run.plan.tab_carry,
        "topup_micros": run.plan.topup_micros,
        "by_preference": {
            k: {
                "gross_micros": run.gross.get(k, 0),
                "fees_micros": attributed.get(k, 0),
                "card_charges": count.get(k, 0),
                "effective_fee": attributed.get(k, 0) / run.gross[k] if run.gross.get(k) else 0.0,
            }
            for k in KINDS
            if k in run.kind_of.values()
        },
        "refused": dict(run.refused),
        "reconcile_ok": report.ok and not processor_problems,
        "reconcile_violations": [str(v) for v in report.violations][:10]
        + [str(v) for v in processor_problems][:10],
    }


def full_report(
    run: Run, schedules: Sequence[FeeSchedule], tab_limit_micros: int
) -> dict[str, Any]:
    """``fee_report`` and ``payout_facts``; reconcile_ok covers charges, ledger and payouts."""
    report = fee_report(run, schedules, tab_limit_micros)
    report.update(payout_facts(run))
    report["reconcile_ok"] = report["reconcile_ok"] and not report["payout_violations"]
    report["reconcile_violations"] += report["payout_violations"]
    return report


def summary(
    scenario: str, params: dict[str, Any], reports: dict[str, dict[str, Any]]
) -> dict[str, Any]:
    """The one JSON object: the planner's figures on top, both runs in full below."""
    main, naive = reports["planner"], reports["naive"]
    gross = main["gross_micros"]
    per_item = main["per_item_fee_micros"]
    return {
        "scenario": scenario,
        **params,
        "gross_micros": gross,
        "fees_micros": main["fees_micros"],
        "fees_paid_micros": main["fees_paid_micros"],
        "effective_fee": main["effective_fee"],
        "naive_effective_fee": naive["effective_fee"],
        "fee_ratio": main["effective_fee"] / naive["effective_fee"]
        if naive["effective_fee"]
        else 0.0,
        "per_item_effective_fee": per_item / gross if gross else 0.0,
        "card_charges": main["card_charges"],
        "max_exposure_micros": main["max_exposure_micros"],
        "payouts": main["payouts"],
        "payouts_micros": main["payouts_micros"],
        "reconcile_ok": all(r["reconcile_ok"] for r in reports.values()),
        "planner": main,
        "naive": naive,
    }
