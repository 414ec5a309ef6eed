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

Pay-per-item readers meet the product's fee guard (PRODUCT.md B.3): publishers
keep the default limit (15% of the price), so a direct card charge for a
cheap article is refused, and the refusal proposes a cheaper model. A seeded
share of readers (``convert_share``, drawn once per reader, the same in both
runs) accept it at their first refusal and get the run's tab (the planner's
tab in the planner run, the naive 5 USD tab in the naive run): a tab keeps
what such a reader wanted, paying only for what was read and nothing in
advance, which a wallet would not. The others keep paying per item where the
guard allows it and leave every refused article unbought (lost sales, counted
in the report). Gross volume is what was actually sold, in both runs alike.
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
from micropay.payments.models import FundingSource, PurchaseStatus, TabState
from micropay.payments.records import ChargeStatus
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments, Receipt
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
from micropay.simulate.basics import (
    CURRENCY,
    DAY_S,
    KINDS,
    START_US,
    SimClock,
    kind_of,
    max_tab_exposure,
    no_tab,
    poisson,
)
from micropay.store import open_store
from micropay.store.migrate import upgrade

GUARD_KEYS = (
    "attempts",  # pay-per-item readers' purchases of articles they did not own yet
    "direct_purchases",  # ... paid by a direct card charge the guard allowed
    "converted_purchases",  # ... paid on the tab the reader accepted
    "refusals",  # direct charges the fee guard refused
    "conversions",  # readers who accepted the proposed tab (at a refusal, bought on it)
    "lost_sales",  # refused purchases left unbought
    "lost_micros",
)


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
    fee_guard_max_bps: int = 1_500  # the product's default merchant limit
    fee_guard_refuses: bool = True
    convert_share: float = 0.5  # refused pay-per-item readers who take the proposed tab
    prepay_max_micros: int = 0  # largest top-up asked; 0: the planner's default bound

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
            prepay_max_micros=self.prepay_max_micros,
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
    reader_gross: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    converted: set[int] = field(default_factory=set)  # pay-per-item readers who took a tab
    guard: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    guard_message: str = ""  # what the first refused reader was shown


def _price(rng: random.Random, lo: int, hi: int) -> int:
    """Log-uniform between lo and hi, in whole cents."""
    micros = math.exp(rng.uniform(math.log(lo), math.log(hi)))
    return max(lo, min(hi, round(micros / 10_000) * 10_000))


def _setup(run: _Run, cfg: NewsConfig, kinds: list[str], prices: list[list[int]]) -> None:
    p = run.payments
    for m in range(cfg.publishers):
        merchant = p.create_merchant(
            f"Publisher {m}",
            CURRENCY,
            fee_guard_max_bps=cfg.fee_guard_max_bps,
            fee_guard_refuses=cfg.fee_guard_refuses,
        )
        run.merchant_ids.append(merchant.id)
        for a, price in enumerate(prices[m]):
            p.set_item(merchant.id, f"a{a}", f"Article {m}-{a}", price)
    for i, kind in enumerate(kinds):
        customer = p.create_customer(
            CURRENCY,
            processor_customer_token=f"cus_{i}",
            payment_method_token=f"pm_{i}",
            also=no_tab if kind == "direct" else None,
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


def _open_tab(run: _Run, reader: int) -> None:
    """The reader accepts the proposed tab: the run's first tab limit (undoes ``no_tab``)."""
    customer_id = run.customer_ids[reader]
    limit = run.payments.tab_policy.first_limit_micros

    def apply(tx: PaymentsWriteTx) -> None:
        customer = tx.get_customer(customer_id)
        if customer is None:
            raise KeyError(f"customer {customer_id} vanished")
        tx.set_credit_limit(chart.tab_account(customer_id, CURRENCY), limit)
        tx.update_customer_tab(customer_id, limit, TabState.open, customer.tab_opened_at_us)

    run.payments.charges.tx(apply)


def _proposes_tab(receipt: Receipt) -> bool:
    """The fee guard's refusal names the cheaper models; a tab is one of them."""
    return receipt.status is PurchaseStatus.fee_guard_refused and "tab" in receipt.message


def _buy(
    run: _Run, kind: str, reader: int, merchant: int, article: int, key: str, accepts: bool
) -> None:
    def attempt() -> Receipt:
        return run.payments.purchase(
            run.merchant_ids[merchant], run.customer_ids[reader], f"a{article}", key
        )

    receipt = attempt()
    if receipt.status is PurchaseStatus.already_entitled:
        return
    if kind == "direct":
        run.guard["attempts"] += 1
    if receipt.status is PurchaseStatus.fee_guard_refused:
        run.guard["refusals"] += 1
        run.guard_message = run.guard_message or receipt.message
        if accepts and reader not in run.converted and _proposes_tab(receipt):
            _open_tab(run, reader)
            run.converted.add(reader)
            run.guard["conversions"] += 1
            receipt = attempt()  # the refusal wrote nothing: the same key buys it on the tab
        else:
            run.guard["lost_sales"] += 1
            run.guard["lost_micros"] += receipt.price_micros
            return
    if receipt.status is PurchaseStatus.ok and not receipt.replayed:
        run.gross[kind] += receipt.price_micros
        run.reader_gross[reader] += receipt.price_micros
        run.purchases += 1
        run.bought.append((merchant, article))
        if kind == "direct":
            source = "direct" if receipt.funding is FundingSource.direct else "converted"
            run.guard[f"{source}_purchases"] += 1
    else:
        run.refused[receipt.status.value] += 1


def _report(run: _Run, cfg: NewsConfig, kinds: list[str], per_item_fee: int) -> dict[str, Any]:
    p = run.payments
    reader_of = {cid: i for i, cid in enumerate(run.customer_ids)}
    with p.store.write() as tx:
        charges = tx.charges_for_reconcile()
    paid: dict[int, int] = defaultdict(int)  # per reader
    count: dict[int, int] = defaultdict(int)
    last_topup: dict[int, tuple[int, int]] = {}
    for c in sorted(charges, key=lambda c: (c.created_at_us, c.id)):
        if c.status != ChargeStatus.succeeded.value:
            continue
        paid[reader_of[c.customer_id]] += c.fee_micros
        count[reader_of[c.customer_id]] += 1
        if c.purpose == "topup":
            last_topup[c.customer_id] = (c.amount_micros, c.fee_micros)
    wallets = [chart.wallet_account(cid, CURRENCY) for cid in run.customer_ids]
    tabs = [chart.tab_account(cid, CURRENCY) for cid in run.customer_ids]
    accounts = p.ledger.accounts(wallets + tabs)
    attributed: dict[int, int] = defaultdict(int, paid)  # per reader
    unspent_total = owed_total = 0
    limit = run.plan.tab_limit_micros
    tab_rate_num, tab_rate_den = charge_fee_micros(cfg.schedules, limit), limit
    for i, cid in enumerate(run.customer_ids):
        unspent = available_micros(accounts[chart.wallet_account(cid, CURRENCY)])
        if unspent and cid in last_topup:
            amount, fee = last_topup[cid]
            attributed[i] -= fee * unspent // amount
            unspent_total += unspent
        tab = accounts[chart.tab_account(cid, CURRENCY)]
        owed = max(0, tab.debits_posted_micros - tab.credits_posted_micros)
        if owed:
            attributed[i] += -(-owed * tab_rate_num // tab_rate_den)
            owed_total += owed

    def group(readers: list[int]) -> dict[str, Any]:
        gross_micros = sum(run.reader_gross.get(i, 0) for i in readers)
        fees_micros = sum(attributed.get(i, 0) for i in readers)
        return {
            "readers": len(readers),
            "gross_micros": gross_micros,
            "fees_micros": fees_micros,
            "card_charges": sum(count.get(i, 0) for i in readers),
            "effective_fee": fees_micros / gross_micros if gross_micros else 0.0,
        }

    by_kind = {k: [i for i, kind in enumerate(kinds) if kind == k] for k in KINDS}
    gross = sum(run.gross.values())
    fees = sum(attributed.values())
    report = reconcile(p.store)
    processor_problems = reconcile_processor(p.store, run.processor.succeeded_charges())
    tab_readers = set(by_kind["tab"]) | run.converted
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
        "max_exposure_micros": max_tab_exposure(
            run.payments.store, [run.customer_ids[i] for i in tab_readers]
        ),
        "tab_limit_micros": run.plan.tab_limit_micros,
        "tab_carry": run.plan.tab_carry,
        "topup_micros": run.plan.topup_micros,
        "by_preference": {k: group(readers) for k, readers in by_kind.items()},
        "fee_guard": {
            "max_bps": cfg.fee_guard_max_bps,
            "refuses": cfg.fee_guard_refuses,
            "convert_share": cfg.convert_share,
            **{key: run.guard.get(key, 0) for key in GUARD_KEYS},
            "converted": group(sorted(run.converted)),
            "stayed": group([i for i in by_kind["direct"] if i not in run.converted]),
            "shown": run.guard_message,
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
    if not 0.0 <= cfg.convert_share <= 1.0:
        raise ValueError("convert_share must be between 0 and 1")
    rng = random.Random(cfg.seed)
    kinds = [kind_of(i, cfg.share_tab, cfg.share_wallet) for i in range(cfg.customers)]
    # Each reader's answer to the fee guard's proposal: drawn once, apart from
    # the stream of reads, so both runs (and any share) see the same reads.
    answers = random.Random(f"news-fee-guard-{cfg.seed}")
    accepts = [answers.random() < cfg.convert_share for _ in range(cfg.customers)]
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
                    for n in range(poisson(rng, cfg.reads_per_day)):
                        merchant = rng.randrange(cfg.publishers)
                        article = rng.randrange(cfg.articles_per_publisher)
                        key = f"d{day}-r{reader}-{n}"
                        for run in runs:
                            run.clock.now_us = START_US + (day * DAY_S + reader) * 1_000_000 + n
                            _buy(
                                run, kinds[reader], reader, merchant, article, key, accepts[reader]
                            )
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
        "fee_guard_refusals": main["fee_guard"]["refusals"],
        "conversions": main["fee_guard"]["conversions"],
        "lost_sales": main["fee_guard"]["lost_sales"],
        "lost_sales_micros": main["fee_guard"]["lost_micros"],
        "payouts": 0,
        "reconcile_ok": main["reconcile_ok"] and naive["reconcile_ok"],
        "planner": main,
        "naive": naive,
    }
