"""The ``creator`` month: fans tipping creators 1-5 USD, creators paid out weekly.

Each creator is a merchant with one ``page``; fans tip it 1 to 5 USD with the
real tip path (``Tips.tip`` with the page as the item). The page's split gives
100% to the creator's payee account, so every tip is split -- in the tip's own
transaction, by the tip hook ``Payouts(..., attach=True)`` installs -- into the
creator's pending balance, held 7 days, and paid out once per ISO week to a
*verified* creator whose available balance is at least 100 USD. Bank accounts
are verified by micro-deposits: most creators verify on day 0, some verify
late (half of them after one wrong guess), some never do.

A tip is paid from the wallet or the tab (never by a card charge of its own):
tab fans tip on their tab (settled by the planner's rules); wallet fans' wallets
are reloaded by the plan's top-up when short (what auto-reload does for a
purchase); fans who pay per tip load exactly the tip (one card charge, the
cost of a direct charge; the scenario's minimum top-up is 1 USD) and tip it
from the wallet.

Checks, per run: an independent tally -- from the tips the simulation saw
succeed, the hold, the deposits each creator read off its bank statement and
the threshold -- predicts every (creator, week, amount) payout, and must equal
the payouts in the database exactly (``payouts_match``); no payout went to a
creator before it verified (``unverified_paid``); at most one per creator and
week (``duplicate_payouts``); processor payouts equal ledger payouts.
"""

from __future__ import annotations

import random
import tempfile
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micropay.core.accounts import available_micros
from micropay.fees.schedules import CARD_MICRO_USD, CARD_STANDARD_USD, FeeSchedule
from micropay.payments import chart
from micropay.payments.billing import TipStatus
from micropay.payments.models import TopUpStatus
from micropay.payouts.plans import Schedule, period_key
from micropay.payouts.splits import Share, bps_whole
from micropay.service.billing import Tips
from micropay.settlement.planner import (
    PlannerInput,
    SpendEstimate,
    charge_fee_micros,
    naive_plan,
    plan,
)
from micropay.simulate._common import (
    SECOND_US,
    Run,
    add_customers,
    full_report,
    new_run,
    pay_out,
    payout_records,
    summary,
    zipf_weights,
)
from micropay.simulate.adapter import tab_policy_for
from micropay.simulate.basics import CURRENCY, DAY_S, START_US, kind_of, max_tab_exposure, poisson

MICROS = 1_000_000
CENT = 10_000
VERIFY_SECOND = 80_000  # late verifications happen after the day's tips, before its payout run
PAGE = "page"  # each creator's page: what every tip is for


@dataclass(frozen=True, slots=True)
class CreatorConfig:
    customers: int = 2_000  # fans
    creators: int = 100
    days: int = 30
    seed: int = 1
    tips_per_day: float = 0.15  # per fan, Poisson
    tip_min_units: int = 1
    tip_max_units: int = 5
    popularity_exponent: float = 1.0
    share_tab: float = 0.6
    share_wallet: float = 0.3  # the rest pay per tip
    share_verify_late: float = 0.2
    share_never_verify: float = 0.1
    tab_cap_micros: int = 25_000_000
    carry_days: int = 90
    payout_threshold_micros: int = 100_000_000
    hold_days: int = 7
    schedules: tuple[FeeSchedule, ...] = (CARD_STANDARD_USD, CARD_MICRO_USD)

    def tip_units(self) -> range:
        return range(self.tip_min_units, self.tip_max_units + 1)

    def planner_input(self) -> PlannerInput:
        units = self.tip_units()
        mean = sum(u * MICROS for u in units) / len(units)
        second = sum((u * MICROS) ** 2 for u in units) / len(units)
        return PlannerInput(
            SpendEstimate.compound_poisson(self.tips_per_day, mean, second),
            self.tab_cap_micros,
            self.schedules,
            period_days=self.days,
            carry_days=max(self.days, self.carry_days),
            prepay_days=self.days,
        )


@dataclass
class _Creators:
    """One run's creators and the simulation's own books of them (by creator index)."""

    merchants: list[int] = field(default_factory=list)
    payees: list[int] = field(default_factory=list)
    verified_at_us: dict[int, int] = field(default_factory=dict)
    deposits_micros: dict[int, int] = field(default_factory=dict)
    tips: dict[int, list[tuple[int, int]]] = field(default_factory=lambda: defaultdict(list))


def _verification_day(c: int, cfg: CreatorConfig, rng: random.Random) -> int | None:
    """Day 0, a late day, or never (None): deterministic shares, a seeded late day."""
    slot = (c * 0.6180339887498949 + 0.5) % 1.0
    late_day = rng.randrange(1, max(2, cfg.days))
    if slot < cfg.share_never_verify:
        return None
    if slot < cfg.share_never_verify + cfg.share_verify_late:
        return late_day
    return 0


def _verify(run: Run, books: _Creators, c: int, wrong_first: bool) -> None:
    payee_id, token = books.payees[c], f"ba_c{c}"
    started = run.payouts.start_verification(payee_id).status.value
    if started != "deposits_sent":
        raise RuntimeError(f"verification of creator {c} did not start: {started}")
    first, second = (minor * CENT for minor in run.processor.to[token][:2])
    if wrong_first:
        run.payouts.confirm_deposits(payee_id, first % (99 * CENT) + CENT, second)
    if run.payouts.confirm_deposits(payee_id, second, first).status.value != "verified":
        raise RuntimeError(f"creator {c} could not verify")
    books.verified_at_us[c] = run.clock()
    books.deposits_micros[c] = first + second


def _setup(run: Run, cfg: CreatorConfig, kinds: list[str]) -> _Creators:
    p, payouts = run.payments, run.payouts
    books = _Creators()
    for c in range(cfg.creators):
        merchant = p.create_merchant(f"Creator {c}", CURRENCY)
        payee = payouts.create_payee(
            f"Creator {c}",
            CURRENCY,
            f"ba_c{c}",
            schedule=Schedule.weekly,
            threshold_micros=cfg.payout_threshold_micros,
            hold_s=cfg.hold_days * DAY_S,
        )
        books.merchants.append(merchant.id)
        books.payees.append(payee.id)
        p.set_item(merchant.id, PAGE, f"Creator {c}'s page", cfg.tip_min_units * MICROS)
        payouts.set_split(merchant.id, PAGE, [Share(payee.id, bps_whole)])
    add_customers(run, kinds)
    # Fans who pay per tip load exactly one tip: the smallest tip is the smallest top-up.
    p.topup_min_micros = min(p.topup_min_micros, cfg.tip_min_units * MICROS)
    return books


def _tip(run: Run, tips: Tips, fan: int, merchant_id: int, amount: int, key: str) -> bool:
    """One tip by fan index ``fan`` for the creator's page; True when newly paid."""
    customer_id = run.customer_ids[fan]
    kind = run.kind_of[customer_id]
    load = 0
    if kind == "direct":
        load = amount  # a card charge per tip: load the tip, then tip it
    elif kind == "wallet":
        wallet_id = chart.wallet_account(customer_id, CURRENCY)
        wallet = run.payments.ledger.accounts([wallet_id])[wallet_id]
        if available_micros(wallet) < amount:
            load = run.plan.topup_micros  # auto-reload: the short wallet is topped up first
    if load:
        loaded = run.payments.top_up(customer_id, load, f"load:{key}")
        if loaded.status is not TopUpStatus.ok:
            run.refused[f"top_up_{loaded.status.value}"] += 1
            return False
    receipt = tips.tip(merchant_id, customer_id, amount, key, item_ref=PAGE)
    if receipt.status is TipStatus.ok and not receipt.replayed:
        run.gross[kind] += amount
        run.purchases += 1
        return True
    run.refused[receipt.status.value] += 1
    return False


def _expected_payouts(cfg: CreatorConfig, books: _Creators) -> list[tuple[int, str, int]]:
    """(payee id, week, amount) of every payout the rules call for, from our own books."""
    hold_us = cfg.hold_days * DAY_S * SECOND_US
    paid: dict[int, int] = defaultdict(int)
    weeks: set[tuple[int, str]] = set()
    expected = []
    for day in range(cfg.days):
        run_us = books_day_end(day)
        week = period_key(Schedule.weekly, run_us)
        for c, payee_id in enumerate(books.payees):
            verified = books.verified_at_us.get(c)
            if verified is None or verified > run_us or (c, week) in weeks:
                continue
            released = sum(a for t, a in books.tips[c] if t + hold_us <= run_us)
            available = released - books.deposits_micros[c] - paid[c]
            amount = available - available % CENT
            if amount >= cfg.payout_threshold_micros:
                expected.append((payee_id, week, amount))
                paid[c] += amount
                weeks.add((c, week))
    return sorted(expected)


def books_day_end(day: int) -> int:
    """When ``Run.day_end`` puts the clock: the day's payout run."""
    return START_US + (day * DAY_S + DAY_S - 1) * SECOND_US


def _payout_checks(run: Run, cfg: CreatorConfig, books: _Creators) -> dict[str, Any]:
    records = [r for r in payout_records(run) if r.purpose == "earnings"]
    actual = sorted((r.payee_id, r.period_key, r.amount_micros) for r in records)
    expected = _expected_payouts(cfg, books)
    index_of = {pid: c for c, pid in enumerate(books.payees)}
    unverified = [
        r
        for r in records
        if books.verified_at_us.get(index_of[r.payee_id]) is None
        or books.verified_at_us[index_of[r.payee_id]] > r.created_at_us
    ]
    hold_us = cfg.hold_days * DAY_S * SECOND_US
    last_run = books_day_end(cfg.days - 1)
    withheld = [
        c
        for c in range(cfg.creators)
        if c not in books.verified_at_us
        and sum(a for t, a in books.tips[c] if t + hold_us <= last_run)
        >= cfg.payout_threshold_micros
    ]
    return {
        "unverified_above_threshold": len(withheld),  # earned enough, never paid
        "payees_expected": len({pid for pid, _, _ in expected}),
        "payouts_expected": len(expected),
        "payouts_match": actual == expected,
        "payout_mismatches": len(set(actual) ^ set(expected)),
        "unverified_paid": len(unverified),
        "creators_verified": len(books.verified_at_us),
        "creators_never_verified": cfg.creators - len(books.verified_at_us),
    }


def run_creator(cfg: CreatorConfig, directory: Path | None = None) -> dict[str, Any]:
    """Run the month under the planner and the naive policy; one JSON-able report."""
    if min(cfg.customers, cfg.creators, cfg.days) <= 0:
        raise ValueError("customers, creators and days must be positive")
    if not 0 < cfg.tip_min_units <= cfg.tip_max_units:
        raise ValueError("need 0 < tip_min_units <= tip_max_units")
    rng = random.Random(cfg.seed)
    kinds = [kind_of(i, cfg.share_tab, cfg.share_wallet) for i in range(cfg.customers)]
    popularity = zipf_weights(cfg.creators, cfg.popularity_exponent)
    verify_on = {c: _verification_day(c, cfg, rng) for c in range(cfg.creators)}
    wrong_first = {c: rng.random() < 0.5 for c in range(cfg.creators)}
    inp = cfg.planner_input()
    plans = {"planner": plan(inp), "naive": naive_plan(inp)}
    units = list(cfg.tip_units())
    with tempfile.TemporaryDirectory(prefix="micropay-sim-", dir=directory) as tmp:
        runs = [
            new_run(
                name,
                chosen,
                Path(tmp),
                tab_policy=tab_policy_for(
                    chosen,
                    period_s=cfg.days * DAY_S,
                    carry_max_age_s=cfg.carry_days * DAY_S,
                ),
            )
            for name, chosen in plans.items()
        ]
        try:
            books = {run.name: _setup(run, cfg, kinds) for run in runs}
            tips = {run.name: Tips(run.payments) for run in runs}
            per_tip_fee: dict[str, int] = defaultdict(int)
            for day in range(cfg.days):
                if day == 0:
                    for run in runs:
                        run.at(day, 0)
                        for c, on in verify_on.items():
                            if on == 0:
                                _verify(run, books[run.name], c, wrong_first=False)
                for fan in range(cfg.customers):
                    for n in range(poisson(rng, cfg.tips_per_day)):
                        c = rng.choices(range(cfg.creators), cum_weights=popularity)[0]
                        amount = rng.choice(units) * MICROS
                        for run in runs:
                            run.at(day, 1 + fan * (VERIFY_SECOND - 2) // cfg.customers, n)
                            key = f"d{day}-f{fan}-{n}"
                            merchant = books[run.name].merchants[c]
                            if _tip(run, tips[run.name], fan, merchant, amount, key):
                                books[run.name].tips[c].append((run.clock(), amount))
                                per_tip_fee[run.name] += charge_fee_micros(cfg.schedules, amount)
                for run in runs:
                    run.at(day, VERIFY_SECOND)
                    for c, on in verify_on.items():
                        if day and on == day:
                            _verify(run, books[run.name], c, wrong_first=wrong_first[c])
                    run.day_end(day)
                    pay_out(run)
            reports = {}
            for run in runs:
                run.at(cfg.days, 0)
                run.payments.charges.close_tab_periods()
                report = full_report(run, cfg.schedules, run.plan.tab_limit_micros)
                tab_customers = [c for c, k in run.kind_of.items() if k == "tab"]
                report["max_exposure_micros"] = max_tab_exposure(run.payments.store, tab_customers)
                report["per_item_fee_micros"] = per_tip_fee[run.name]
                report["tips"] = run.purchases  # tips made (``Run`` counts them as purchases)
                report.update(_payout_checks(run, cfg, books[run.name]))
                reports[run.name] = report
        finally:
            for run in runs:
                run.payments.store.close()
    params = {
        "customers": cfg.customers,
        "creators": cfg.creators,
        "days": cfg.days,
        "seed": cfg.seed,
        "tab_cap_micros": cfg.tab_cap_micros,
        "payout_threshold_micros": cfg.payout_threshold_micros,
        "hold_days": cfg.hold_days,
    }
    result = summary("creator", params, reports)
    main = reports["planner"]
    for key in (
        "payees_paid",
        "payees_expected",
        "payouts_expected",
        "creators_verified",
        "creators_never_verified",
        "unverified_above_threshold",
    ):
        result[key] = main[key]
    for key in ("unverified_paid", "duplicate_payouts", "payout_mismatches"):
        result[key] = sum(r[key] for r in reports.values())
    result["payouts_match"] = all(r["payouts_match"] for r in reports.values())
    result["reconcile_ok"] = result["reconcile_ok"] and result["payouts_match"]
    result["reconcile_ok"] = result["reconcile_ok"] and not (
        result["unverified_paid"] or result["duplicate_payouts"]
    )
    return result
