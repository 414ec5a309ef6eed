"""The settlement planner: tab limit, settlement point and top-up size. Pure.

A processor charge costs a fixed part plus a percentage, and the cheapest
schedule is picked per charge (``fees.schedules.cheapest``: below ~12 USD the
micropayment rate, above it card standard). The cheapest fee function is
concave, so fewer, larger charges always cost less per unit of spend; what
bounds them is the exposure cap (what a customer may owe on a tab) and, for a
prepaid wallet, money paid in advance that may sit unspent.

For one customer with a spending estimate, the planner evaluates every
candidate policy on the same spend distribution (the spend over a window,
approximated as normal: a compound Poisson sum of many small purchases, taken
at ``quantiles`` evenly spaced quantiles) and keeps the one with the lowest
expected fee per unit of spend. Ties go to the smaller exposure, then to the
earlier settlement. Candidates always include the naive policy (a fixed 5 USD
tab, fixed 10 USD top-ups, clamped to the limits), so the plan is never worse
than it on the same estimate.

Tab policy (L, carry): the tab settles in one charge when it reaches its limit
L (≤ the cap); at period end it settles what it owes (``carry`` False), or it
carries the balance until it is full or ``carry_days`` old (``carry`` True:
the adapter sets the period minimum to L). Wallet policy T: auto-reload tops
up T whenever the wallet cannot pay. A top-up's fee is the cost of the money
it loads, so money spent from the wallet carries the fee share ``fee(T) / T``
and the unspent rest of the last top-up carries its share forward to the
purchases it will pay for (the simulation reports fees the same way): the
cost of spending S is ``ceil(S * fee(T) / T)``, not ``ceil(S / T) * fee(T)``.
On that measure a larger top-up is always cheaper, so what bounds T is how
much a customer may be asked to prepay at once (``prepay_max_micros``). The
exposure cap does not bound it: the cap limits what a customer may OWE (credit
the platform extends), while a prepaid balance is the customer's own money paid
in advance. By default a top-up covers the customer's expected spend over the
time a carried tab may stay open (``carry_days``), rounded up to a round
figure that can be offered to a customer (``prepay_round_micros``, 5 units);
never less than the market default of 10 USD, never more than the wallet's
largest top-up (``topup_max_micros``).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from statistics import NormalDist

from micropay.fees.schedules import FeeSchedule, cheapest

MICROS = 1_000_000
NAIVE_TAB_LIMIT_MICROS = 5 * MICROS
NAIVE_TOPUP_MICROS = 10 * MICROS
quantiles_default = 32
candidate_step_micros = 500_000  # candidate sizes are whole half-units (0.50 USD)


@dataclass(frozen=True, slots=True)
class SpendEstimate:
    """A customer's spend per day: mean and variance (micros, micros squared)."""

    daily_mean_micros: float
    daily_var_micros2: float = 0.0

    def __post_init__(self) -> None:
        if not (self.daily_mean_micros > 0 and math.isfinite(self.daily_mean_micros)):
            raise ValueError("daily mean spend must be positive and finite")
        if not (self.daily_var_micros2 >= 0 and math.isfinite(self.daily_var_micros2)):
            raise ValueError("daily spend variance must be >= 0 and finite")

    @classmethod
    def compound_poisson(
        cls, purchases_per_day: float, price_mean_micros: float, price_second_moment: float
    ) -> SpendEstimate:
        """Poisson(λ) purchases a day at i.i.d. prices: mean λE[p], variance λE[p²]."""
        return cls(purchases_per_day * price_mean_micros, purchases_per_day * price_second_moment)

    def window_quantiles(self, days: float, n: int) -> list[int]:
        """Spend over ``days`` at n evenly spaced quantiles (normal approximation, >= 0)."""
        mean = self.daily_mean_micros * days
        sd = math.sqrt(self.daily_var_micros2 * days)
        if sd == 0:
            return [round(mean)] * n
        dist = NormalDist(mean, sd)
        return [max(0, round(dist.inv_cdf((i + 0.5) / n))) for i in range(n)]


@dataclass(frozen=True, slots=True)
class PlannerInput:
    spend: SpendEstimate
    exposure_cap_micros: int  # the most a customer may owe on a tab
    schedules: tuple[FeeSchedule, ...]
    period_days: int = 30  # the tab's billing period
    carry_days: int = 90  # a carried tab settles at this age at the latest
    prepay_days: int = 30  # the window the wallet's fee rate is measured over
    prepay_max_micros: int = 0  # largest top-up asked at once; 0: ``prepay_bound_micros``
    prepay_round_micros: int = 5 * MICROS  # default top-ups are offered in these steps
    topup_min_micros: int = 5 * MICROS
    topup_max_micros: int = 500 * MICROS
    minor_step_micros: int = 10_000  # the processor's minor unit (cents)
    quantiles: int = quantiles_default

    def __post_init__(self) -> None:
        if not self.schedules:
            raise ValueError("at least one fee schedule is needed")
        if self.exposure_cap_micros <= 0:
            raise ValueError("the exposure cap must be positive")
        if not 0 < self.period_days <= self.carry_days:
            raise ValueError("need 0 < period_days <= carry_days")
        if self.prepay_days <= 0 or self.quantiles <= 0 or self.minor_step_micros <= 0:
            raise ValueError("windows, quantiles and the minor unit must be positive")
        if not 0 < self.topup_min_micros <= self.topup_max_micros:
            raise ValueError("need 0 < topup_min <= topup_max")
        if self.prepay_round_micros <= 0:
            raise ValueError("top-ups are rounded to a positive step")
        if self.prepay_max_micros < 0:
            raise ValueError("the prepay bound must not be negative (0: the default)")

    def prepay_bound_micros(self) -> int:
        """The largest top-up a customer is asked for at once.

        ``prepay_max_micros`` when set; by default the expected spend over
        ``carry_days``, rounded up to a whole ``prepay_round_micros``, at least
        the naive 10 USD and at most ``topup_max_micros``. Not the exposure cap:
        a prepaid balance is owed to the customer, not by them.
        """
        if self.prepay_max_micros:
            return self.prepay_max_micros
        step = self.prepay_round_micros
        expected = math.ceil(self.spend.daily_mean_micros * self.carry_days / step) * step
        return min(self.topup_max_micros, max(NAIVE_TOPUP_MICROS, expected))


@dataclass(frozen=True, slots=True)
class Plan:
    tab_limit_micros: int  # settle when a purchase would pass it; never above the cap
    tab_carry: bool  # True: at period end, carry a tab that is not full (up to carry_days)
    period_minimum_micros: int  # TabPolicy.period_minimum_micros that realises tab_carry
    topup_micros: int  # auto-reload amount
    tab_fee_rate: float  # expected fee per unit of spend on the tab
    topup_fee_rate: float  # expected fee per unit of spend from the wallet


def charge_fee_micros(schedules: Sequence[FeeSchedule], amount_micros: int) -> int:
    """Fee of one charge at the cheapest schedule that accepts it (amount in whole minor units)."""
    return cheapest(list(schedules), amount_micros).fee_micros(amount_micros)


def _floor_minor(amount_micros: int, step: int) -> int:
    return amount_micros - amount_micros % step


def _chargeable(schedules: Sequence[FeeSchedule], amount_micros: int) -> bool:
    return amount_micros > 0 and any(s.can_charge(amount_micros) for s in schedules)


def tab_cost_micros(
    schedules: Sequence[FeeSchedule], spend_micros: int, limit_micros: int, step: int = 10_000
) -> int:
    """Fees to collect ``spend_micros`` through a tab of ``limit_micros`` settled at window end.

    Full settlements of the limit, then one charge for the rest (a rest too small
    for any schedule stays on the tab and costs nothing in this window).
    """
    if limit_micros <= 0:
        raise ValueError("a tab limit must be positive")
    full, rest = divmod(spend_micros, limit_micros)
    limit = _floor_minor(limit_micros, step)
    cost = full * charge_fee_micros(schedules, limit) if full else 0
    rest = _floor_minor(rest, step)
    if _chargeable(schedules, rest):
        cost += charge_fee_micros(schedules, rest)
    return cost


def topup_cost_micros(
    schedules: Sequence[FeeSchedule], spend_micros: int, topup_micros: int
) -> int:
    """Fees to fund ``spend_micros`` from an empty wallet with top-ups of ``topup_micros``."""
    if topup_micros <= 0:
        raise ValueError("a top-up must be positive")
    count = -(-spend_micros // topup_micros)
    return count * charge_fee_micros(schedules, topup_micros) if count else 0


def topup_spent_cost_micros(
    schedules: Sequence[FeeSchedule], spend_micros: int, topup_micros: int
) -> int:
    """The fee share of ``spend_micros`` spent from a wallet loaded ``topup_micros`` at a time.

    Each top-up's fee is spread over the money it loads, pro rata: spending S
    costs ``ceil(S * fee(T) / T)``; the fee share of money still in the wallet
    belongs to the purchases it will pay for later.
    """
    if topup_micros <= 0:
        raise ValueError("a top-up must be positive")
    if spend_micros <= 0:
        return 0
    fee = charge_fee_micros(schedules, topup_micros)
    return -(-spend_micros * fee // topup_micros)


def _rate(costs: list[int], spends: list[int]) -> float:
    total = sum(spends)
    return sum(costs) / total if total else 0.0


def _sizes(lo: int, hi: int, must: Sequence[int], step: int) -> list[int]:
    sizes = set(range(lo + (-lo) % step, hi + 1, step)) | {lo, hi}
    sizes |= {m for m in must if lo <= m <= hi}
    return sorted(s for s in sizes if s > 0)


def _clamp(value: int, lo: int, hi: int) -> int:
    return max(lo, min(hi, value))


def naive_plan(inp: PlannerInput) -> Plan:
    """The market default: a fixed 5 USD tab settled at period end, fixed 10 USD top-ups."""
    limit = min(
        NAIVE_TAB_LIMIT_MICROS, _floor_minor(inp.exposure_cap_micros, inp.minor_step_micros)
    )
    topup = _clamp(NAIVE_TOPUP_MICROS, inp.topup_min_micros, inp.topup_max_micros)
    return Plan(
        limit,
        False,
        0,
        topup,
        tab_rate(inp, limit, carry=False),
        topup_rate(inp, topup),
    )


def tab_rate(inp: PlannerInput, limit_micros: int, *, carry: bool) -> float:
    days = inp.carry_days if carry else inp.period_days
    spends = inp.spend.window_quantiles(days, inp.quantiles)
    costs = [tab_cost_micros(inp.schedules, s, limit_micros, inp.minor_step_micros) for s in spends]
    return _rate(costs, spends)


def topup_rate(inp: PlannerInput, topup_micros: int) -> float:
    """Expected fee per unit of money spent from the wallet (fees attributed pro rata)."""
    spends = inp.spend.window_quantiles(inp.prepay_days, inp.quantiles)
    costs = [topup_spent_cost_micros(inp.schedules, s, topup_micros) for s in spends]
    return _rate(costs, spends)


def plan(inp: PlannerInput) -> Plan:
    """The tab and top-up policy with the lowest expected fee per unit of spend."""
    step = inp.minor_step_micros
    naive = naive_plan(inp)
    cap = _floor_minor(inp.exposure_cap_micros, step)
    if cap <= 0:
        raise ValueError("the exposure cap is below one minor unit")
    best_tab: tuple[float, int, int, int] | None = None  # (rate, limit, carry, -)
    for limit in _sizes(step, cap, [naive.tab_limit_micros], candidate_step_micros):
        for carry in (False, True):
            rate = tab_rate(inp, limit, carry=carry)
            key = (round(rate, 12), limit, int(carry), 0)
            if best_tab is None or key < best_tab:
                best_tab = key
    assert best_tab is not None
    tab_fee, limit, carry_flag = best_tab[0], best_tab[1], bool(best_tab[2])
    prepay_max = inp.prepay_bound_micros()
    hi = _floor_minor(max(inp.topup_min_micros, min(inp.topup_max_micros, prepay_max)), step)
    lo = inp.topup_min_micros + (-inp.topup_min_micros) % step
    best_topup: tuple[float, int] | None = None
    for topup in _sizes(lo, max(lo, hi), [naive.topup_micros], candidate_step_micros):
        key2 = (round(topup_rate(inp, topup), 12), topup)
        if best_topup is None or key2 < best_topup:
            best_topup = key2
    assert best_topup is not None
    return Plan(
        limit,
        carry_flag,
        limit if carry_flag else 0,
        best_topup[1],
        tab_fee,
        best_topup[0],
    )
