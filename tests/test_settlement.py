"""The settlement planner: table cases and properties (pure, no store)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from micropay.fees.schedules import CARD_MICRO_USD, CARD_STANDARD_USD
from micropay.settlement.planner import (
    NAIVE_TAB_LIMIT_MICROS,
    NAIVE_TOPUP_MICROS,
    PlannerInput,
    SpendEstimate,
    charge_fee_micros,
    naive_plan,
    plan,
    tab_cost_micros,
    tab_rate,
    topup_cost_micros,
    topup_rate,
    topup_spent_cost_micros,
)

BOTH = (CARD_STANDARD_USD, CARD_MICRO_USD)
USD = 1_000_000


@pytest.mark.parametrize(
    ("amount", "fee"),
    [
        (50_000, 50_000),  # 0.05: micro 0.0025 rounds to 0 cents, + 0.05
        (5 * USD, 300_000),  # micro 0.25 + 0.05
        (10 * USD, 550_000),  # micro 0.50 + 0.05 (standard would be 0.59)
        (12 * USD, 650_000),  # micro 0.65 == standard 0.648 -> 0.65 too; micro near the crossing
        (25 * USD, 1_030_000),  # standard 0.725 -> 0.73 (half up) + 0.30 (micro: 1.30)
    ],
)
def test_charge_fee_takes_the_cheaper_schedule(amount: int, fee: int) -> None:
    assert charge_fee_micros(BOTH, amount) == fee


@pytest.mark.parametrize(
    ("spend", "limit", "fee"),
    [
        (8_800_000, 5 * USD, 300_000 + 240_000),  # one 5.00 (0.30) + 3.80 at period end (0.24)
        (8_800_000, 10 * USD, 490_000),  # one charge of 8.80
        (25 * USD, 25 * USD, 1_030_000),  # one full tab
        (4_000, 5 * USD, 0),  # below a cent: stays on the tab
    ],
)
def test_tab_cost_table(spend: int, limit: int, fee: int) -> None:
    assert tab_cost_micros(BOTH, spend, limit) == fee


def test_topup_cost_counts_every_reload() -> None:
    assert topup_cost_micros(BOTH, 8_800_000, 10 * USD) == 550_000
    assert topup_cost_micros(BOTH, 10_000_001, 10 * USD) == 2 * 550_000
    assert topup_cost_micros(BOTH, 0, 10 * USD) == 0


@pytest.mark.parametrize(
    ("spend", "topup", "fee"),
    [
        (8_800_000, 10 * USD, 484_000),  # 0.55 * 8.80 / 10.00: the unspent 1.20 carries 0.066
        (8_800_000, 25 * USD, 362_560),  # 1.03 * 8.80 / 25.00
        (10_000_001, 10 * USD, 550_001),  # one micro into the second top-up: rounded up
        (0, 10 * USD, 0),
    ],
)
def test_topup_spent_cost_is_the_pro_rata_fee_share(spend: int, topup: int, fee: int) -> None:
    """The report's measure: each top-up's fee spread over the money it loads."""
    assert topup_spent_cost_micros(BOTH, spend, topup) == fee
    # Never more than the fees actually paid to fund the same spend.
    assert fee <= topup_cost_micros(BOTH, spend, topup)


def test_topup_spent_cost_refuses_a_non_positive_topup() -> None:
    with pytest.raises(ValueError, match="top-up"):
        topup_spent_cost_micros(BOTH, USD, 0)


NEWS = SpendEstimate.compound_poisson(1.5, 195_000, 53_700_000_000)


def test_news_reader_tops_up_the_prepay_bound_at_its_fee_share() -> None:
    inp = PlannerInput(NEWS, 25 * USD, BOTH)
    # Default bound: 90 days at ~0.29 a day = ~26.39, rounded up to 5.00 steps:
    # 30.00. The tab's 25.00 cap does not bound money the customer prepays.
    assert inp.prepay_bound_micros() == 30 * USD
    chosen = plan(inp)
    assert chosen.topup_micros == 30 * USD
    # 1.17 per 30.00 (card standard), whatever the month's spend: 3.90%, not
    # the ceil(S / T) * fee of cash paid (which made 11.00 look best before).
    assert chosen.topup_fee_rate == pytest.approx(1_170_000 / (30 * USD), rel=1e-5)
    assert topup_rate(inp, 10 * USD) == pytest.approx(0.055, rel=1e-5)
    assert naive_plan(inp).topup_fee_rate == pytest.approx(0.055, rel=1e-5)
    # An explicit bound is obeyed: 15.00 costs 0.74 (standard), 4.93%.
    bounded = plan(PlannerInput(NEWS, 25 * USD, BOTH, prepay_max_micros=15 * USD))
    assert bounded.topup_micros == 15 * USD
    assert bounded.topup_fee_rate == pytest.approx(740_000 / (15 * USD), rel=1e-5)


@pytest.mark.parametrize(
    ("daily", "cap", "bound"),
    [
        (50_000, 25 * USD, 10 * USD),  # 4.50 in 90 days: the market's 10.00 is still asked
        (50_000, 8 * USD, 10 * USD),  # ... whatever the tab cap
        (USD, 100 * USD, 90 * USD),  # 90 days of spend
        (USD, 25 * USD, 90 * USD),  # a tab cap does not bound a prepaid balance
        (1_010_000, 25 * USD, 95 * USD),  # 90.90 rounded up to a whole 5.00
        (10 * USD, 25 * USD, 500 * USD),  # the wallet's largest top-up binds
    ],
)
def test_default_prepay_bound(daily: int, cap: int, bound: int) -> None:
    inp = PlannerInput(SpendEstimate(daily), cap, BOTH)
    assert inp.prepay_bound_micros() == bound
    assert plan(inp).topup_micros <= bound


def test_news_reader_plan_uses_the_cap_and_carries() -> None:
    inp = PlannerInput(NEWS, 25 * USD, BOTH)
    chosen = plan(inp)
    assert chosen.tab_limit_micros == 25 * USD
    assert chosen.tab_carry
    assert chosen.period_minimum_micros == chosen.tab_limit_micros
    naive = naive_plan(inp)
    assert (naive.tab_limit_micros, naive.topup_micros) == (5 * USD, 10 * USD)
    assert chosen.tab_fee_rate < 0.75 * naive.tab_fee_rate


def test_a_small_cap_binds_and_a_large_one_is_not_used_in_full() -> None:
    assert plan(PlannerInput(NEWS, 3 * USD, BOTH)).tab_limit_micros == 3 * USD
    # A light spender never fills a 500 USD tab within the carry window: the
    # planner keeps the smallest limit that is as cheap.
    light = SpendEstimate(100_000)  # 0.10 a day, 9.00 in 90 days
    assert plan(PlannerInput(light, 500 * USD, BOTH)).tab_limit_micros <= 10 * USD


def test_bad_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="mean spend"):
        SpendEstimate(0)
    with pytest.raises(ValueError, match="exposure cap"):
        PlannerInput(NEWS, 0, BOTH)
    with pytest.raises(ValueError, match="fee schedule"):
        PlannerInput(NEWS, USD, ())
    with pytest.raises(ValueError, match="prepay bound"):
        PlannerInput(NEWS, USD, BOTH, prepay_max_micros=-1)
    with pytest.raises(ValueError, match="rounded"):
        PlannerInput(NEWS, USD, BOTH, prepay_round_micros=0)


spend_estimates = st.builds(
    SpendEstimate,
    st.floats(min_value=1_000, max_value=20 * USD),
    st.floats(min_value=0, max_value=1e13),
)


@settings(max_examples=60, deadline=None)
@given(
    spend=spend_estimates,
    cap=st.integers(min_value=10_000, max_value=100 * USD),
    prepay=st.integers(min_value=0, max_value=100 * USD),
)
def test_plan_never_exceeds_the_cap_and_stays_within_topup_limits(
    spend: SpendEstimate, cap: int, prepay: int
) -> None:
    inp = PlannerInput(spend, cap, BOTH, quantiles=8, prepay_max_micros=prepay)
    chosen = plan(inp)
    assert 0 < chosen.tab_limit_micros <= cap
    assert chosen.period_minimum_micros in (0, chosen.tab_limit_micros)
    assert inp.topup_min_micros <= chosen.topup_micros <= inp.topup_max_micros
    assert chosen.topup_micros <= max(inp.topup_min_micros, inp.prepay_bound_micros())


@settings(max_examples=60, deadline=None)
@given(
    spend=spend_estimates,
    cap=st.integers(min_value=NAIVE_TAB_LIMIT_MICROS, max_value=100 * USD),
)
def test_plan_is_never_worse_than_naive_on_the_same_spend(spend: SpendEstimate, cap: int) -> None:
    inp = PlannerInput(spend, max(cap, NAIVE_TOPUP_MICROS), BOTH, quantiles=8)
    chosen, naive = plan(inp), naive_plan(inp)
    assert tab_rate(inp, chosen.tab_limit_micros, carry=chosen.tab_carry) <= tab_rate(
        inp, naive.tab_limit_micros, carry=False
    )
    assert topup_rate(inp, chosen.topup_micros) <= topup_rate(inp, naive.topup_micros)


@settings(max_examples=100, deadline=None)
@given(
    a=st.integers(min_value=1, max_value=50_000).map(lambda c: c * 10_000),
    b=st.integers(min_value=1, max_value=50_000).map(lambda c: c * 10_000),
)
def test_one_charge_never_costs_more_than_two(a: int, b: int) -> None:
    """Why fewer, larger charges win: the cheapest fee is subadditive."""
    assert charge_fee_micros(BOTH, a + b) <= charge_fee_micros(BOTH, a) + charge_fee_micros(BOTH, b)
