"""``micropay bench tabs``: the period-end settlement run of N due tabs, timed.

Setup (not timed): one merchant selling on tab, N customers each buying one
item on their tab (the real purchase path, ``Payments._purchase_in``, many
customers per transaction so that setup stays short), then the clock moves
past the tab period's end.

Timed: what the worker does at period end, the ``close_tab_periods`` job (every
due tab: a settlement charge recorded, asked of the simulated processor, its
outcome posted) and the ``run_due_charges`` job, each claimed and run by a
:class:`~micropay.worker.Worker` like ``micropay worker`` runs them. Then
reconcile (not timed) checks the books, and the report counts the tabs that
owe nothing any more and the processor's charges.

Speed is reported, never asserted.
"""

from __future__ import annotations

import secrets
import sys
import time
from dataclasses import dataclass
from typing import Any

from micropay.bench.databases import fresh_database
from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments.models import Customer, FundingSource, TabPolicy, TabState
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.charges import request_hash, tab_owed_micros
from micropay.service.ledger import system_clock_us
from micropay.service.payments import Payments, Receipt, _PurchaseRequest
from micropay.service.ports import PaymentsWriteTx
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.worker import Worker, payments_registry
from micropay.worker.jobs import period_run_key

CURRENCY = "USD"
PRICE_MICROS = parse_amount("0.60", CURRENCY)  # above the period minimum: each tab is charged
setup_batch = 1_000
settlement_jobs = ("close_tab_periods", "run_due_charges")


@dataclass(frozen=True, slots=True)
class TabsOptions:
    tabs: int = 100_000
    store: str = "sqlite"
    database_url: str | None = None
    progress: bool = False


class BenchClock:
    """The wall clock plus an offset the bench moves (to reach the tabs' period end)."""

    def __init__(self) -> None:
        self.offset_us = 0

    def __call__(self) -> int:
        return system_clock_us() + self.offset_us

    def advance(self, seconds: int) -> None:
        self.offset_us += seconds * 1_000_000


def run_tabs_bench(options: TabsOptions) -> dict[str, Any]:
    """Set up ``options.tabs`` due tabs, time the settlement run, reconcile; return the report."""
    if options.tabs < 1:
        raise ValueError("tabs must be >= 1")
    report: dict[str, Any] = {"store": options.store, "tabs": options.tabs}
    with fresh_database(options.store, options.database_url, "tabs") as url:
        store: Any = open_store(url)
        try:
            clock = BenchClock()
            processor = SimulatedProcessor()
            payments = Payments(store, processor, clock=clock)
            started = time.perf_counter()
            merchant_id, customer_ids = _set_up(payments, options)
            report["setup_s"] = round(time.perf_counter() - started, 2)
            clock.advance(payments.tab_policy.period_s + 1)

            worker = Worker(store, payments_registry(payments), clock=clock, names=settlement_jobs)
            calls_before = processor.calls
            started = time.perf_counter()
            outcomes = _settle(worker, clock)
            seconds = time.perf_counter() - started

            owing = _still_owing(payments, customer_ids)
            charges = processor.succeeded_charges()
            settled = len(customer_ids) - owing
            report.update(
                {
                    "tabs_settled": settled,
                    "tabs_still_owing": owing,
                    "seconds": round(seconds, 2),
                    "tabs_per_s": round(settled / seconds, 1) if seconds > 0 else None,
                    "charges_made": len(charges),
                    "charged_micros": sum(minor for minor, _ in charges.values()) * 10_000,
                    "processor_calls": processor.calls - calls_before,
                    "jobs": [f"{o.name}:{o.state}" for o in outcomes],
                    "merchant_id": merchant_id,
                }
            )
            result = reconcile(store)
            report["reconcile_ok"] = result.ok
            report["violations"] = [str(v) for v in result.violations][:10]
        finally:
            store.close()
    return report


def _settle(worker: Worker, clock: BenchClock) -> list[Any]:
    """Enqueue and run the period-end jobs, as ``micropay worker`` does on its next pass."""
    for name in settlement_jobs:
        spec = worker.registry[name]
        assert spec.every_s is not None
        key, start_us = period_run_key(name, spec.every_s, clock())
        worker.enqueue(name, key, due_at_us=start_us)
    return worker.run_due()


def _set_up(payments: Payments, options: TabsOptions) -> tuple[int, list[int]]:
    merchant = payments.create_merchant("Bench tabs", CURRENCY, funding_policy=(FundingSource.tab,))
    payments.set_item(merchant.id, "article", "An article", PRICE_MICROS)
    policy: TabPolicy = payments.tab_policy
    customer_ids: list[int] = []
    done = 0
    while done < options.tabs:
        count = min(setup_batch, options.tabs - done)
        customer_ids += payments.charges.tx(
            lambda tx, n=count, first=done: _customers_with_tabs(  # type: ignore[misc]
                tx, payments, merchant.id, policy, first, n
            )
        )
        done += count
        if options.progress and done % 10_000 == 0:
            print(f"  setup: {done:,} tabs", file=sys.stderr, flush=True)
    return merchant.id, customer_ids


def _customers_with_tabs(
    tx: PaymentsWriteTx,
    payments: Payments,
    merchant_id: int,
    policy: TabPolicy,
    first: int,
    count: int,
) -> list[int]:
    """``count`` customers, each buying the article on their tab, in one transaction."""
    now_us = payments.clock()
    ids = []
    for n in range(first, first + count):
        draft = Customer(
            0,
            f"cus_{secrets.token_hex(8)}",
            CURRENCY,
            f"cus_bench_{n}",
            f"pm_bench_{n}",
            policy.first_limit_micros,
            TabState.open,
            now_us,
            0,
            0,
        )
        customer_id = tx.insert_customer(draft, now_us)
        payments._open_in(
            tx,
            [
                chart.new_account(
                    chart.Owner.customer, customer_id, chart.Kind.customer_wallet, CURRENCY
                ),
                chart.new_account(
                    chart.Owner.customer,
                    customer_id,
                    chart.Kind.customer_tab,
                    CURRENCY,
                    credit_limit_micros=policy.first_limit_micros,
                ),
            ],
        )
        request = _PurchaseRequest(
            merchant_id,
            customer_id,
            "article",
            f"bench-{n}",
            request_hash(merchant_id, customer_id, "article", None, None),
            None,
            None,
        )
        receipt = payments._purchase_in(tx, request, retried=False)
        if not isinstance(receipt, Receipt) or receipt.funding is not FundingSource.tab:
            raise RuntimeError(f"setup purchase {n} did not go on the tab: {receipt}")
        ids.append(customer_id)
    return ids


def _still_owing(payments: Payments, customer_ids: list[int]) -> int:
    """How many of the tabs still owe something (after the run: none should)."""
    owing = 0
    for start in range(0, len(customer_ids), setup_batch):
        tab_ids = [
            chart.tab_account(c, CURRENCY) for c in customer_ids[start : start + setup_batch]
        ]
        accounts = payments.ledger.accounts(tab_ids)
        owing += sum(1 for a in accounts.values() if tab_owed_micros(a) > 0)
    return owing
