"""The ``news`` month: readers buying articles, run twice in one go (planner vs naive).

Both runs go through the real ``Payments`` service on their own fresh SQLite
store, with the ``SimulatedProcessor`` and a clock moved by hand, and see the
same seeded stream of reads. At month end every tab's billing period closes
(``close_tab_periods``), and both oracles run: ``reconcile`` and
``reconcile_processor``.

Fees are reported two ways. ``fees_paid_micros`` is what the processor charged
during the month. ``fees_micros`` (and ``effective_fee`` = fees / gross) is the
fee cost of the month's purchases: fees paid, minus the share of top-up fees
that prepaid wallet money still unspent at month end, plus, for what tabs
still owe, the fee of the charge that will collect it (a full tab at the
policy's limit). Both policies are measured the same way; without that, a
policy would look cheaper merely by leaving more unbilled at month end.
"""

from __future__ import annotations

import math
import random
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micropay.core.accounts import available_micros
from micropay.fees.schedules import CARD_MICRO_USD, CARD_STANDARD_USD, FeeSchedule
from micropay.payments import chart
from micropay.payments.models import Customer, PurchaseStatus, TabState
from micropay.payments.records import ChargeStatus
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.service.ports import PaymentsWriteTx
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.settlement.planner import (
    Plan,
    PlannerInput,
    SpendEstimate,
    charge_fee_micros,
    naive_plan,
    plan,
)
from micropay.simulate.adapter import enable_auto_reload, tab_policy_for
from micropay.store import open_store
from micropay.store.migrate import upgrade

DAY_S = 86_400
CURRENCY = "USD"
START_US = 1_767_225_600_000_000  # 2026-01-01 00:00 UTC


class SimClock:
    """A clock the simulation moves by hand (microseconds)."""

    def __init__(self, start_us: int = START_US) -> None:
        self.now_us = start_us

    def __call__(self) -> int:
        return self.now_us


@dataclass(frozen=True, slots=True)
class NewsConfig:
    customers: int = 10_000
    publishers: int = 200
    articles_per_publisher: int = 50
    days: int = 30
    seed: int = 1
    reads_per_day: float = 1.5
    price_min_micros: int = 50_000
    price_max_micros: int = 500_000
    share_tab: float = 0.6
    share_wallet: float = 0.3  # the rest pay per item
    tab_cap_micros: int = 25_000_000
    carry_days: int = 90
    schedules: tuple[FeeSchedule, ...] = (CARD_STANDARD_USD, CARD_MICRO_USD)

    def spend_estimate(self) -> SpendEstimate:
        lo, hi = self.price_min_micros, self.price_max_micros
        log_ratio = math.log(hi / lo)
        mean = (hi - lo) / log_ratio
        second = (hi * hi - lo * lo) / (2 * log_ratio)
        return SpendEstimate.compound_poisson(self.reads_per_day, mean, second)

    def planner_input(self) -> PlannerInput:
        return PlannerInput(
            self.spend_estimate(),
            self.tab_cap_micros,
            self.schedules,
            period_days=self.days,
            carry_days=max(self.days, self.carry_days),
            prepay_days=self.days,
        )


@dataclass
class _Run:
    """One policy's service, store and tallies."""

    name: str
    plan: Plan
    payments: Payments
    processor: SimulatedProcessor
    clock: SimClock
    customer_ids: list[int] = field(default_factory=list)
    merchant_ids: list[int] = field(default_factory=list)
    gross: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    purchases: int = 0
    bought: list[tuple[int, int]] = field(default_factory=list)  # (publisher, article)
    refused: dict[str, int] = field(default_factory=lambda: defaultdict(int))


def _price(rng: random.Random, lo: int, hi: int) -> int:
    """Log-uniform between lo and hi, in whole cents."""
    micros = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return max(lo, min(hi, round(micros / 10_000) * 10_000))


def _poisson(rng: random.Random, lam: float) -> int:
    threshold, k, product = math.exp(-lam), 0, rng.random()
    while product > threshold and k < 1_000:
        k += 1
        product *= rng.random()
    return k


def _kind_of(index: int, cfg: NewsConfig) -> str:
    """Reader ``index``'s preference, spread evenly (deterministic shares)."""
    slot = (index * 0.6180339887498949) % 1.0
    if slot < cfg.share_tab:
        return "tab"
    if slot < cfg.share_tab + cfg.share_wallet:
        return "wallet"
    return "direct"


def _no_tab(tx: PaymentsWriteTx, customer: Customer) -> None:
    """A pay-per-item reader has no tab: its credit line is 0."""
    tx.set_credit_limit(chart.tab_account(customer.id, customer.currency), 0)
    tx.update_customer_tab(customer.id, 0, TabState.open, customer.tab_opened_at_us)


def _setup(run: _Run, cfg: NewsConfig, kinds: list[str], prices: list[list[int]]) -> None:
    p = run.payments
    for m in range(cfg.publishers):
        merchant = p.create_merchant(f"Publisher {m}", CURRENCY, fee_guard_refuses=False)
        run.merchant_ids.append(merchant.id)
        for a, price in enumerate(prices[m]):
            p.set_item(merchant.id, f"a{a}", f"Article {m}-{a}", price)
    for i, kind in enumerate(kinds):
        customer = p.create_customer(
            CURRENCY,
            processor_customer_token=f"cus_{i}",
            payment_method_token=f"pm_{i}",
            also=_no_tab if kind == "direct" else None,
        )
        run.customer_ids.append(customer.id)
        if kind == "wallet":
            enable_auto_reload(p, customer.id, run.plan)


def _new_run(name: str, chosen: Plan, cfg: NewsConfig, directory: Path) -> _Run:
    path = directory / f"{name}.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    store: Any = open_store(url)
    clock = SimClock()
    processor = SimulatedProcessor()
    policy = tab_policy_for(
        chosen, period_s=cfg.days * DAY_S, carry_max_age_s=cfg.carry_days * DAY_S
    )
    payments = Payments(store, processor, clock=clock, tab_policy=policy)
    return _Run(name, chosen, payments, processor, clock)


def _buy(run: _Run, kind: str, reader: int, merchant: int, article: int, key: str) -> None:
    receipt = run.payments.purchase(
        run.merchant_ids[merchant], run.customer_ids[reader], f"a{article}", key
    )
    if receipt.status is PurchaseStatus.ok and not receipt.replayed:
        run.gross[kind] += receipt.price_micros
        run.purchases += 1
        run.bought.append((merchant, article))
    elif receipt.status is not PurchaseStatus.already_entitled:
        run.refused[receipt.status.value] += 1


def _max_exposure(run: _Run, tab_readers: set[int]) -> int:
    """The most any customer owed on a tab at any moment, replayed from the ledger."""
    tabs = {chart.tab_account(run.customer_ids[i], CURRENCY) for i in tab_readers}
    owed: dict[int, int] = defaultdict(int)
    worst = 0
    with run.payments.store.read() as reader:
        for t in reader.iter_transfers():
            if t.debit_account_id in tabs:
                owed[t.debit_account_id] += t.amount_micros
                worst = max(worst, owed[t.debit_account_id])
            if t.credit_account_id in tabs:
                owed[t.credit_account_id] -= t.amount_micros
    return worst


def _report(run: _Run, cfg: NewsConfig, kinds: list[str], per_item_fee: int) -> dict[str, Any]:
    p = run.payments
    kind_of_customer = {cid: kinds[i] for i, cid in enumerate(run.customer_ids)}
    with p.store.write() as tx:
        charges = tx.charges_for_reconcile()
    paid: dict[str, int] = defaultdict(int)
    count: dict[str, int] = defaultdict(int)
    last_topup: dict[int, tuple[int, int]] = {}
    for c in sorted(charges, key=lambda c: (c.created_at_us, c.id)):
        if c.status != ChargeStatus.succeeded.value:
            continue
        kind = kind_of_customer[c.customer_id]
        paid[kind] += c.fee_micros
        count[kind] += 1
        if c.purpose == "topup":
            last_topup[c.customer_id] = (c.amount_micros, c.fee_micros)
    wallets = [chart.wallet_account(cid, CURRENCY) for cid in run.customer_ids]
    tabs = [chart.tab_account(cid, CURRENCY) for cid in run.customer_ids]
    accounts = p.ledger.accounts(wallets + tabs)
    attributed = dict(paid)
    unspent_total = owed_total = 0
    limit = run.plan.tab_limit_micros
    tab_rate_num, tab_rate_den = charge_fee_micros(cfg.schedules, limit), limit
    for cid in run.customer_ids:
        kind = kind_of_customer[cid]
        unspent = available_micros(accounts[chart.wallet_account(cid, CURRENCY)])
        if unspent and cid in last_topup:
            amount, fee = last_topup[cid]
            attributed[kind] = attributed.get(kind, 0) - fee * unspent // amount
            unspent_total += unspent
        tab = accounts[chart.tab_account(cid, CURRENCY)]
        owed = max(0, tab.debits_posted_micros - tab.credits_posted_micros)
        if owed:
            attributed[kind] = attributed.get(kind, 0) + -(-owed * tab_rate_num // tab_rate_den)
            owed_total += owed
    gross = sum(run.gross.values())
    fees = sum(attributed.values())
    report = reconcile(p.store)
    processor_problems = reconcile_processor(p.store, run.processor.succeeded_charges())
    tab_readers = {i for i, k in enumerate(kinds) if k == "tab"}
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
        "max_exposure_micros": _max_exposure(run, tab_readers),
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
            for k in ("tab", "wallet", "direct")
        },
        "refused": dict(run.refused),
        "per_item_fee_micros": per_item_fee,
        "reconcile_ok": report.ok and not processor_problems,
        "reconcile_violations": [str(v) for v in report.violations][:10]
        + [str(v) for v in processor_problems][:10],
    }


def run_news(cfg: NewsConfig, directory: Path | None = None) -> dict[str, Any]:
    """Run the month under the planner and the naive policy; one JSON-able report."""
    if cfg.customers <= 0 or cfg.publishers <= 0 or cfg.days <= 0:
        raise ValueError("customers, publishers and days must be positive")
    rng = random.Random(cfg.seed)
    kinds = [_kind_of(i, cfg) for i in range(cfg.customers)]
    prices = [
        [
            _price(rng, cfg.price_min_micros, cfg.price_max_micros)
            for _ in range(cfg.articles_per_publisher)
        ]
        for _ in range(cfg.publishers)
    ]
    planner_input = cfg.planner_input()
    plans = {"planner": plan(planner_input), "naive": naive_plan(planner_input)}
    with tempfile.TemporaryDirectory(prefix="micropay-sim-", dir=directory) as tmp:
        runs = [_new_run(name, chosen, cfg, Path(tmp)) for name, chosen in plans.items()]
        try:
            for run in runs:
                _setup(run, cfg, kinds, prices)
            per_item_fee = 0
            for day in range(cfg.days):
                for reader in range(cfg.customers):
                    for n in range(_poisson(rng, cfg.reads_per_day)):
                        merchant = rng.randrange(cfg.publishers)
                        article = rng.randrange(cfg.articles_per_publisher)
                        key = f"d{day}-r{reader}-{n}"
                        for run in runs:
                            run.clock.now_us = START_US + (day * DAY_S + reader) * 1_000_000 + n
                            _buy(run, kinds[reader], reader, merchant, article, key)
            for run in runs:
                run.clock.now_us = START_US + cfg.days * DAY_S * 1_000_000
                run.payments.charges.close_tab_periods()
            reports = {}
            for run in runs:
                per_item_fee = sum(
                    charge_fee_micros(cfg.schedules, prices[m][a]) for m, a in run.bought
                )
                reports[run.name] = _report(run, cfg, kinds, per_item_fee)
        finally:
            for run in runs:
                run.payments.store.close()
    main, naive = reports["planner"], reports["naive"]
    gross = main["gross_micros"]
    return {
        "scenario": "news",
        "customers": cfg.customers,
        "publishers": cfg.publishers,
        "days": cfg.days,
        "seed": cfg.seed,
        "tab_cap_micros": cfg.tab_cap_micros,
        "gross_micros": gross,
        "fees_micros": main["fees_micros"],
        "fees_paid_micros": main["fees_paid_micros"],
        "effective_fee": main["effective_fee"],
        "naive_effective_fee": naive["effective_fee"],
        "fee_ratio": main["effective_fee"] / naive["effective_fee"]
        if naive["effective_fee"]
        else 0.0,
        "per_item_effective_fee": main["per_item_fee_micros"] / gross if gross else 0.0,
        "card_charges": main["card_charges"],
        "max_exposure_micros": main["max_exposure_micros"],
        "payouts": 0,
        "reconcile_ok": main["reconcile_ok"] and naive["reconcile_ok"],
        "planner": main,
        "naive": naive,
    }
