"""The ``api`` month: API clients metered per call, billed from wallets with auto-reload.

One API merchant (wallet only) meters calls at 0.0004 USD. Each client has
its own typical volume (log-uniform in 1,000-100,000 calls a day) and each
day's volume varies around it. Calls are recorded in hourly batches
(``Metering.record_usage_batch``, one event per client and hour carrying the
hour's call count), and billed by ``Metering.aggregate_usage`` once per
billing window: one ledger transfer per client and window, exactly
sum(calls) x price. Aggregation never calls the processor, so the wallet's
auto-reload is the simulation's part: a client whose wallet cannot pay its
window is topped up by its reload amount (as often as needed, each a card
charge) and the window billed again. Each client buys its first reload's
worth of credit before its first call.

The planner picks each client's reload amount from that client's own
expected spend (``PlannerInput.prepay_days`` bounds how much is paid in
advance); the naive policy reloads a fixed 10 USD. ``max_exposure_micros`` is
the most any client had used and not yet paid for (usage in the window
beyond what its wallet held) when a window was billed: what a client could
walk away from, since its calls are served before they are billed.

``per_item_effective_fee`` charges each billing window's amount separately
(a card cannot charge one 0.0004 USD call: ``per_call_effective_fee`` is what
the cheapest schedule's fixed part alone would make of it).
"""

from __future__ import annotations

import math
import random
import statistics
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from micropay.core.accounts import available_micros
from micropay.fees.schedules import CARD_MICRO_USD, CARD_STANDARD_USD, FeeSchedule
from micropay.payments import chart
from micropay.payments.billing import usage_events_per_call_max
from micropay.payments.models import FundingSource
from micropay.service.billing import Metering, UsageEvent
from micropay.settlement.planner import (
    Plan,
    PlannerInput,
    SpendEstimate,
    charge_fee_micros,
    naive_plan,
    plan,
)
from micropay.simulate._common import (
    Run,
    add_customers,
    full_report,
    new_run,
    summary,
)
from micropay.simulate.basics import CURRENCY

HOUR_S = 3_600
METER = "calls"


@dataclass(frozen=True, slots=True)
class ApiConfig:
    customers: int = 200  # API clients
    days: int = 30
    seed: int = 1
    calls_min: int = 1_000  # per client and day
    calls_max: int = 100_000
    daily_jitter: float = 0.2  # a day's calls are typical x U(1 - j, 1 + j)
    unit_price_micros: int = 400
    bill_every_hours: int = 24
    tab_cap_micros: int = 25_000_000  # the planner's exposure cap (no tab is used here)
    prepay_days: int = 7  # the most a reload should prepay, in days of the client's use
    topup_min_micros: int = 5_000_000
    topup_max_micros: int = 500_000_000
    schedules: tuple[FeeSchedule, ...] = (CARD_STANDARD_USD, CARD_MICRO_USD)

    def planner_input(self, typical_calls: int) -> PlannerInput:
        """One client's estimate: daily calls uniform around ``typical_calls``."""
        mean = typical_calls * self.unit_price_micros
        spread = 2 * self.daily_jitter * mean
        return PlannerInput(
            SpendEstimate(mean, spread * spread / 12),
            self.tab_cap_micros,
            self.schedules,
            period_days=self.days,
            carry_days=max(self.days, 90),
            prepay_days=self.prepay_days,
            # A reload prepays at most ``prepay_days`` of this client's typical use.
            prepay_max_micros=max(self.topup_min_micros, mean * self.prepay_days),
            topup_min_micros=self.topup_min_micros,
            topup_max_micros=self.topup_max_micros,
        )


def _hourly(calls: int) -> list[int]:
    """A day's calls spread over 24 hours, exactly."""
    base, extra = divmod(calls, 24)
    return [base + (1 if h < extra else 0) for h in range(24)]


@dataclass
class _Billing:
    """One run's metering, each client's reload amount and what it has used unbilled."""

    run: Run
    metering: Metering
    merchant_id: int
    reload: list[int]
    unit_price_micros: int
    schedules: tuple[FeeSchedule, ...]
    unbilled: list[int] = field(default_factory=list)
    index: dict[int, int] = field(default_factory=dict)  # customer id -> client
    calls: int = 0
    max_exposure: int = 0
    per_window_fee: int = 0
    unpaid_windows: int = 0
    reloads: int = 0

    def wallets(self, customer_ids: list[int]) -> list[int]:
        ids = [chart.wallet_account(c, CURRENCY) for c in customer_ids]
        accounts = self.run.payments.ledger.accounts(ids)
        return [available_micros(accounts[i]) for i in ids]

    def record(self, quantities: list[int], key: str) -> None:
        events = [
            UsageEvent(cid, METER, q, f"{key}-c{i}")
            for i, (cid, q) in enumerate(zip(self.run.customer_ids, quantities, strict=True))
            if q
        ]
        for start in range(0, len(events), usage_events_per_call_max):
            batch = events[start : start + usage_events_per_call_max]
            for event, receipt in zip(
                batch, self.metering.record_usage_batch(self.merchant_id, batch), strict=True
            ):
                if not receipt.ok:
                    self.run.refused[f"usage_{receipt.status.value}"] += 1
                    continue
                self.calls += event.quantity
                self.unbilled[self.index[event.customer_id]] += (
                    event.quantity * self.unit_price_micros
                )

    def bill(self) -> None:
        """Bill every client's window; reload the wallets that cannot pay, then bill again."""
        held = self.wallets(self.run.customer_ids)
        for owed, has in zip(self.unbilled, held, strict=True):
            self.max_exposure = max(self.max_exposure, owed - has)
        now = self.run.clock()
        report = self.metering.aggregate_usage(now)
        postings = list(report.postings)
        if report.unpaid:
            short_ids = [u.customer_id for u in report.unpaid]
            for unpaid, has in zip(report.unpaid, self.wallets(short_ids), strict=True):
                amount = self.reload[self.index[unpaid.customer_id]]
                for n in range(max(1, -(-(unpaid.amount_micros - has) // amount))):
                    receipt = self.run.payments.top_up(
                        unpaid.customer_id, amount, f"reload:{now}:{n}"
                    )
                    if receipt.status.value == "ok":
                        self.reloads += 1
                    else:
                        self.run.refused[f"topup_{receipt.status.value}"] += 1
            again = self.metering.aggregate_usage(now)
            postings += again.postings
            self.unpaid_windows += len(again.unpaid)
        for posting in postings:
            self.unbilled[self.index[posting.customer_id]] -= posting.amount_micros
            self.run.gross["wallet"] += posting.amount_micros
            self.run.purchases += 1
            chargeable = posting.amount_micros - posting.amount_micros % 10_000
            if chargeable:
                self.per_window_fee += charge_fee_micros(self.schedules, chargeable)


def _setup(run: Run, cfg: ApiConfig, reload_plans: list[Plan]) -> _Billing:
    p = run.payments
    merchant = p.create_merchant(
        "Metered API", CURRENCY, funding_policy=(FundingSource.wallet,), fee_guard_refuses=False
    )
    metering = Metering(p)
    metering.set_meter(merchant.id, METER, cfg.unit_price_micros)
    add_customers(run, ["wallet"] * cfg.customers, reload_plans=reload_plans)
    billing = _Billing(
        run,
        metering,
        merchant.id,
        [pl.topup_micros for pl in reload_plans],
        cfg.unit_price_micros,
        cfg.schedules,
        unbilled=[0] * cfg.customers,
        index={cid: i for i, cid in enumerate(run.customer_ids)},
    )
    for cid, amount in zip(run.customer_ids, billing.reload, strict=True):
        receipt = p.top_up(cid, amount, "signup")  # credit bought before the first call
        if receipt.status.value == "ok":
            billing.reloads += 1
        else:
            run.refused[f"topup_{receipt.status.value}"] += 1
    return billing


def run_api(cfg: ApiConfig, directory: Path | None = None) -> dict[str, Any]:
    """Run the month under the planner and the naive policy; one JSON-able report."""
    if cfg.customers <= 0 or cfg.days <= 0:
        raise ValueError("customers and days must be positive")
    if not 0 < cfg.calls_min <= cfg.calls_max or not 0 <= cfg.daily_jitter < 1:
        raise ValueError("need 0 < calls_min <= calls_max and 0 <= daily_jitter < 1")
    if not 0 < cfg.bill_every_hours <= 24 or 24 % cfg.bill_every_hours:
        raise ValueError("bill_every_hours must divide 24")
    rng = random.Random(cfg.seed)
    lo, hi = math.log(cfg.calls_min), math.log(cfg.calls_max)
    typical = [round(math.exp(rng.uniform(lo, hi))) for _ in range(cfg.customers)]
    cache: dict[int, Plan] = {}
    for calls in typical:
        if calls not in cache:
            cache[calls] = plan(cfg.planner_input(calls))
    plans = {
        "planner": [cache[calls] for calls in typical],
        "naive": [naive_plan(cfg.planner_input(typical[0]))] * cfg.customers,
    }
    with tempfile.TemporaryDirectory(prefix="micropay-sim-", dir=directory) as tmp:
        runs = [new_run(name, chosen[0], Path(tmp)) for name, chosen in plans.items()]
        try:
            billing = {run.name: _setup(run, cfg, plans[run.name]) for run in runs}
            for day in range(cfg.days):
                daily = [
                    max(
                        cfg.calls_min,
                        min(
                            cfg.calls_max,
                            round(t * rng.uniform(1 - cfg.daily_jitter, 1 + cfg.daily_jitter)),
                        ),
                    )
                    for t in typical
                ]
                hours = [_hourly(calls) for calls in daily]
                for hour in range(24):
                    for run in runs:
                        run.at(day, hour * HOUR_S)
                        billing[run.name].record([h[hour] for h in hours], f"d{day}h{hour}")
                    if (hour + 1) % cfg.bill_every_hours == 0:
                        for run in runs:
                            run.at(day, (hour + 1) * HOUR_S - 1)
                            billing[run.name].bill()
            reports = {
                run.name: _report(run, cfg, billing[run.name], plans[run.name]) for run in runs
            }
        finally:
            for run in runs:
                run.payments.store.close()
    params = {
        "customers": cfg.customers,
        "days": cfg.days,
        "seed": cfg.seed,
        "tab_cap_micros": cfg.tab_cap_micros,
        "unit_price_micros": cfg.unit_price_micros,
        "bill_every_hours": cfg.bill_every_hours,
    }
    result = summary("api", params, reports)
    main = reports["planner"]
    for key in ("calls", "postings", "reloads", "unpaid_windows", "unbilled_micros"):
        result[key] = main[key]
    result["per_call_effective_fee"] = main["per_call_effective_fee"]
    result["topup_micros_median"] = main["topup_micros_median"]
    return result


def _report(run: Run, cfg: ApiConfig, billing: _Billing, chosen: list[Plan]) -> dict[str, Any]:
    report = full_report(run, cfg.schedules, run.plan.tab_limit_micros)
    report["max_exposure_micros"] = billing.max_exposure
    report["per_item_fee_micros"] = billing.per_window_fee
    report["per_call_effective_fee"] = (
        charge_fee_micros(cfg.schedules, cfg.unit_price_micros) / cfg.unit_price_micros
    )
    report["calls"] = billing.calls
    report["postings"] = run.purchases
    report["reloads"] = billing.reloads
    report["unpaid_windows"] = billing.unpaid_windows
    report["unbilled_micros"] = sum(billing.unbilled)
    # Every call was billed exactly once: calls x price == what the postings took.
    report["billed_exactly"] = billing.calls * cfg.unit_price_micros == report[
        "gross_micros"
    ] + sum(billing.unbilled) and not any(billing.unbilled)
    report["reconcile_ok"] = report["reconcile_ok"] and report["billed_exactly"]
    topups = sorted(p.topup_micros for p in chosen)
    report["tab_limit_micros"], report["tab_carry"] = 0, False  # no tab: wallets only
    report["topup_micros_min"] = topups[0]
    report["topup_micros_median"] = report["topup_micros"] = int(statistics.median(topups))
    report["topup_micros_max"] = topups[-1]
    return report
