"""Tips, metered usage and subscriptions: period arithmetic (tables + properties) and
worked examples on both stores, each ending with reconcile and the processor's books.
"""

from __future__ import annotations

import itertools
import threading
from datetime import UTC, date, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from micropay.core.accounts import available_micros, credit_balance_micros
from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments.billing import (
    Period,
    SubscriptionState,
    SubscriptionStatus,
    TipStatus,
    UsageStatus,
    add_months,
    billing_period,
    boundary_us,
    local_date,
    period_number_at,
    period_start_date,
    usage_amount_micros,
    usage_events_per_call_max,
    zone,
)
from micropay.payments.models import FundingSource
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.billing import Metering, Subscriptions, Tips, UsageEvent
from micropay.service.ids import IdGenerator
from micropay.service.payments import Payments, PaymentsInputError
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.store import open_store

NY = zone("America/New_York")
WALLET_ONLY = (FundingSource.wallet,)
TAB_FIRST = (FundingSource.wallet, FundingSource.tab)


def usd(text: str) -> int:
    return parse_amount(text, "USD")


def at_us(year: int, month: int, day: int, hour: int = 12) -> int:
    return int(datetime(year, month, day, hour, tzinfo=UTC).timestamp()) * 1_000_000


# --- period arithmetic: tables -----------------------------------------------------


@pytest.mark.parametrize(
    ("anchor", "period", "n", "expected"),
    [
        (date(2024, 1, 31), Period.monthly, 1, date(2024, 2, 29)),  # leap year
        (date(2023, 1, 31), Period.monthly, 1, date(2023, 2, 28)),
        (date(2024, 1, 31), Period.monthly, 2, date(2024, 3, 31)),  # anchor day kept
        (date(2024, 1, 31), Period.monthly, 3, date(2024, 4, 30)),
        (date(2024, 1, 31), Period.monthly, 12, date(2025, 1, 31)),
        (date(2024, 12, 15), Period.monthly, 1, date(2025, 1, 15)),
        (date(2024, 2, 29), Period.yearly, 1, date(2025, 2, 28)),
        (date(2024, 2, 29), Period.yearly, 4, date(2028, 2, 29)),
        (date(2024, 3, 9), Period.weekly, 1, date(2024, 3, 16)),
        (date(2024, 12, 31), Period.daily, 1, date(2025, 1, 1)),
        (date(2024, 5, 5), Period.daily, 0, date(2024, 5, 5)),
    ],
)
def test_period_start_dates(anchor: date, period: Period, n: int, expected: date) -> None:
    assert period_start_date(anchor, period, n) == expected


def test_new_york_days_across_dst_last_23_and_25_hours() -> None:
    assert NY is not None
    spring = billing_period(date(2024, 3, 10), Period.daily, 0, NY)
    autumn = billing_period(date(2024, 11, 3), Period.daily, 0, NY)
    assert spring.ends_at_us - spring.starts_at_us == 23 * 3_600_000_000
    assert autumn.ends_at_us - autumn.starts_at_us == 25 * 3_600_000_000
    # Both start at local midnight: 05:00 UTC (EST) and 04:00 UTC (EDT).
    assert spring.starts_at_us == at_us(2024, 3, 10, 5)
    assert autumn.starts_at_us == at_us(2024, 11, 3, 4)


def test_period_number_at_finds_the_containing_period() -> None:
    assert NY is not None
    anchor = date(2024, 1, 31)
    for n in (0, 1, 2, 13, 40):
        p = billing_period(anchor, Period.monthly, n, NY)
        assert period_number_at(anchor, Period.monthly, NY, p.starts_at_us) == n
        assert period_number_at(anchor, Period.monthly, NY, p.ends_at_us - 1) == n


@pytest.mark.parametrize("bad", [-1, 100_001, True])
def test_period_number_out_of_range_is_refused(bad: int) -> None:
    with pytest.raises(ValueError, match="period number"):
        period_start_date(date(2024, 1, 1), Period.daily, bad)


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../etc/passwd", "/etc/x", 5, "a" * 65])
def test_bad_time_zones_are_refused(name: object) -> None:
    assert zone(name) is None


def test_usage_amount_is_exact() -> None:
    assert usage_amount_micros([(1, 400)] * 12_345) == usd("4.938")
    with pytest.raises(ValueError, match="limits"):
        usage_amount_micros([(0, 400)])


# --- period arithmetic: properties --------------------------------------------------

TIME_ZONES = ["UTC", "America/New_York", "Europe/London", "Australia/Lord_Howe", "America/Santiago"]


@settings(max_examples=150, deadline=None)
@given(
    anchor=st.dates(min_value=date(1990, 1, 1), max_value=date(2060, 12, 31)),
    period=st.sampled_from(list(Period)),
    tz_name=st.sampled_from(TIME_ZONES),
    first=st.integers(min_value=0, max_value=200),
)
def test_consecutive_periods_tile_time_exactly(
    anchor: date, period: Period, tz_name: str, first: int
) -> None:
    """Over several years: no gap, no overlap, every start at local midnight of the right day."""
    tz = zone(tz_name)
    assert tz is not None
    count = {Period.daily: 60, Period.weekly: 60, Period.monthly: 40, Period.yearly: 5}[period]
    previous = None
    for n in range(first, first + count):
        p = billing_period(anchor, period, n, tz)
        if previous is not None:
            assert p.starts_at_us == previous.ends_at_us  # no gap, no overlap
        assert p.ends_at_us > p.starts_at_us
        day = period_start_date(anchor, period, n)
        assert local_date(p.starts_at_us, tz) == day
        if period is Period.monthly:
            assert day.day == min(
                anchor.day, (add_months(day.replace(day=1), 1) - timedelta(1)).day
            )
        assert period_number_at(anchor, period, tz, p.starts_at_us) == n
        previous = p


@settings(max_examples=100, deadline=None)
@given(
    anchor=st.dates(min_value=date(2000, 1, 1), max_value=date(2040, 12, 31)),
    offset_s=st.integers(min_value=0, max_value=5 * 366 * 86_400),
)
def test_every_instant_is_in_exactly_one_monthly_period(anchor: date, offset_s: int) -> None:
    assert NY is not None
    start = boundary_us(anchor, Period.monthly, 0, NY)
    instant = start + offset_s * 1_000_000
    n = period_number_at(anchor, Period.monthly, NY, instant)
    p = billing_period(anchor, Period.monthly, n, NY)
    assert p.starts_at_us <= instant < p.ends_at_us


# --- worked examples ------------------------------------------------------------------


@pytest.fixture
def processor() -> SimulatedProcessor:
    return SimulatedProcessor()


@pytest.fixture
def payments(store, processor, clock) -> Payments:  # type: ignore[no-untyped-def]
    return Payments(store, processor, clock=clock)


def balances_are_whole(payments: Payments, processor: SimulatedProcessor) -> None:
    report = reconcile(payments.store)
    assert report.ok, report.violations
    assert reconcile_processor(payments.store, processor.succeeded_charges()) == []


def balance(payments: Payments, account_id: int) -> int:
    return available_micros(payments.ledger.accounts([account_id])[account_id])


def funded_reader(payments: Payments, amount: str = "20.00", tag: str = "r"):  # type: ignore[no-untyped-def]
    reader = payments.create_customer(
        "USD", processor_customer_token=f"cus_{tag}", payment_method_token=f"pm_{tag}"
    )
    assert payments.top_up(reader.id, usd(amount), f"topup-{tag}").status.value == "ok"
    return reader


def test_reader_tips_two_fifty(payments, processor) -> None:  # type: ignore[no-untyped-def]
    tips = Tips(payments)
    blog = payments.create_merchant("Slow Blog", "USD", funding_policy=WALLET_ONLY)
    alice = funded_reader(payments, "10.00", "a")
    receipt = tips.tip(blog.id, alice.id, usd("2.50"), "tip-1", note="thanks!")
    assert (receipt.status, receipt.funding, receipt.amount_micros) == (
        TipStatus.ok,
        FundingSource.wallet,
        usd("2.50"),
    )
    again = tips.tip(blog.id, alice.id, usd("2.50"), "tip-1", note="thanks!")
    assert (again.tip_id, again.replayed) == (receipt.tip_id, True)
    assert tips.tip(blog.id, alice.id, usd("3.00"), "tip-1").status is (
        TipStatus.idempotency_key_reused
    )
    assert balance(payments, chart.wallet_account(alice.id, "USD")) == usd("7.50")
    payable = payments.ledger.accounts([chart.payable_account(blog.id, "USD")])
    assert credit_balance_micros(payable[chart.payable_account(blog.id, "USD")]) == usd("2.50")
    balances_are_whole(payments, processor)


def test_tips_outside_the_limits_are_refused_and_write_nothing(payments, processor) -> None:  # type: ignore[no-untyped-def]
    tips = Tips(payments)
    blog = payments.create_merchant("Slow Blog", "USD", funding_policy=WALLET_ONLY)
    alice = funded_reader(payments, "200.00", "a")
    cases = [
        (usd("0.009"), TipStatus.amount_below_minimum),
        (usd("100.000001"), TipStatus.amount_above_maximum),
        (0, TipStatus.amount_invalid),
        (-5, TipStatus.amount_invalid),
        (2.5, TipStatus.amount_invalid),
    ]
    for amount, status in cases:
        assert tips.tip(blog.id, alice.id, amount, f"k{amount}").status is status
    assert tips.tip(blog.id, alice.id, usd("0.01"), "at-min").ok
    assert tips.tip(blog.id, alice.id, usd("100"), "at-max").ok
    tips.set_limits(blog.id, usd("1"), usd("5"))
    assert tips.tip(blog.id, alice.id, usd("0.99"), "m1").status is TipStatus.amount_below_minimum
    assert tips.tip(blog.id, alice.id, usd("5.01"), "m2").status is TipStatus.amount_above_maximum
    assert tips.tip(blog.id, alice.id, usd("5"), "m3").ok
    assert tips.tip(blog.id, alice.id, usd("1"), "", note="").status is (
        TipStatus.idempotency_key_invalid
    )
    assert tips.tip(blog.id, alice.id, usd("1"), "n", note="x" * 281).status is (
        TipStatus.note_invalid
    )
    assert tips.tip(blog.id, 999_999, usd("1"), "c").status is TipStatus.customer_not_found
    assert tips.tip(99_999, alice.id, usd("1"), "c").status is TipStatus.merchant_not_found
    with pytest.raises(PaymentsInputError):
        tips.set_limits(blog.id, usd("5"), usd("1"))
    poor = payments.create_customer("USD")
    assert tips.tip(blog.id, poor.id, usd("1"), "p").status is TipStatus.insufficient_funds
    assert balance(payments, chart.wallet_account(alice.id, "USD")) == usd("200") - usd("105.01")
    balances_are_whole(payments, processor)


def test_api_client_is_billed_exactly_in_one_posting(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    """12,345 calls at 0.0004 USD: exactly 4.938 USD in one ledger transfer."""
    metering = Metering(payments)
    api = payments.create_merchant("Geo API", "USD", funding_policy=WALLET_ONLY)
    client = funded_reader(payments, "10.00", "api")
    metering.set_meter(api.id, "calls", usd("0.0004"))
    total = 12_345
    for start in range(0, total, usage_events_per_call_max):
        batch = [
            UsageEvent(client.id, "calls", 1, f"call-{n}")
            for n in range(start, min(total, start + usage_events_per_call_max))
        ]
        assert all(r.ok for r in metering.record_usage_batch(api.id, batch))
    # A retried event is a replay, not a second call.
    assert metering.record_usage(api.id, client.id, "calls", 1, "call-7").replayed
    assert metering.record_usage(api.id, client.id, "calls", 2, "call-7").status is (
        UsageStatus.idempotency_key_reused
    )
    transfers_before = _transfer_count(payments)
    clock.advance(60)
    report = metering.aggregate_usage(clock())
    assert [p.amount_micros for p in report.postings] == [usd("4.938")]
    assert report.postings[0].events == total
    assert _transfer_count(payments) == transfers_before + 1
    # Aggregating again bills nothing more.
    assert metering.aggregate_usage(clock()).postings == []
    assert metering.unbilled(api.id, client.id) == 0
    assert balance(payments, chart.wallet_account(client.id, "USD")) == usd("10") - usd("4.938")
    balances_are_whole(payments, processor)


def _transfer_count(payments: Payments) -> int:
    with payments.store.read() as reader:
        return sum(1 for _ in reader.iter_transfers())


def test_usage_bad_input_and_unpayable_windows(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    metering = Metering(payments)
    api = payments.create_merchant("Geo API", "USD", funding_policy=TAB_FIRST)
    eur_api = payments.create_merchant("Euro API", "EUR", funding_policy=WALLET_ONLY)
    client = payments.create_customer("USD")  # no money, a 1.00 tab, no card
    metering.set_meter(api.id, "calls", 400)
    metering.set_meter(eur_api.id, "calls", 400)
    with pytest.raises(PaymentsInputError):
        metering.set_meter(api.id, "cheap", 0)
    assert metering.record_usage(api.id, client.id, "calls", 0, "q0").status is (
        UsageStatus.quantity_invalid
    )
    assert metering.record_usage(api.id, client.id, "calls", 1_000_001, "q1").status is (
        UsageStatus.quantity_invalid
    )
    assert metering.record_usage(api.id, client.id, "nope", 1, "m").status is (
        UsageStatus.meter_not_found
    )
    assert metering.record_usage(api.id, 424_242, "calls", 1, "c").status is (
        UsageStatus.customer_not_found
    )
    assert metering.record_usage(eur_api.id, client.id, "calls", 1, "e").status is (
        UsageStatus.currency_not_sold
    )
    too_many = [UsageEvent(client.id, "calls", 1, f"b{n}") for n in range(1_001)]
    assert {r.status for r in metering.record_usage_batch(api.id, too_many)} == {
        UsageStatus.batch_too_large
    }
    assert metering.unbilled(api.id, client.id) == 0
    # 2,000 calls (0.80) fit the 1.00 tab; 3,000 more (1.20) do not: left unbilled, reported.
    assert metering.record_usage(api.id, client.id, "calls", 2_000, "w1").ok
    clock.advance(60)
    first = metering.aggregate_usage(clock())
    assert [(p.amount_micros, p.funding) for p in first.postings] == [(usd("0.80"), "tab")]
    assert metering.record_usage(api.id, client.id, "calls", 3_000, "w2").ok
    clock.advance(60)
    second = metering.aggregate_usage(clock())
    assert second.postings == []
    assert [(u.amount_micros, u.reason) for u in second.unpaid] == [
        (usd("1.20"), "insufficient_funds")
    ]
    assert metering.unbilled(api.id, client.id) == 1  # still waiting, billed later
    with pytest.raises(ValueError, match="future"):
        metering.aggregate_usage(clock() + 1)
    balances_are_whole(payments, processor)


def test_monthly_subscription_from_jan_31_through_a_leap_february(
    payments, processor, clock
) -> None:  # type: ignore[no-untyped-def]
    subs = Subscriptions(payments)
    paper = payments.create_merchant("Gazette", "USD", funding_policy=WALLET_ONLY)
    clock.now_us = at_us(2024, 1, 31, 15)  # 10:00 in New York
    plan = subs.set_plan(paper.id, "digital", "Digital", Period.monthly, usd("4.99"))
    reader = funded_reader(payments, "50.00", "s")
    receipt = subs.subscribe(
        paper.id, reader.id, plan.plan_ref, "sub-1", time_zone="America/New_York"
    )
    assert receipt.status is SubscriptionStatus.ok
    assert subs.subscribe(
        paper.id, reader.id, "digital", "sub-1", time_zone="America/New_York"
    ).replayed
    assert NY is not None
    assert local_date(receipt.period_ends_at_us, NY) == date(2024, 2, 29)
    starts = []
    for year, month, day in [(2024, 2, 29), (2024, 3, 31), (2024, 4, 30), (2024, 5, 31)]:
        clock.now_us = at_us(year, month, day, 6)  # just after local midnight
        assert not payments.has_access(paper.id, reader.id, "digital")  # the paid period ended
        outcomes = subs.renew_due()
        assert [o.state for o in outcomes] == [SubscriptionState.active]
        assert payments.has_access(paper.id, reader.id, "digital")
        assert subs.renew_due() == []  # once per period
        starts.append(local_date(subs.get(receipt.subscription_id).period_starts_at_us, NY))
    assert starts == [date(2024, 2, 29), date(2024, 3, 31), date(2024, 4, 30), date(2024, 5, 31)]
    periods = subs.periods(receipt.subscription_id)
    assert [p.period_number for p in periods] == [0, 1, 2, 3, 4]
    assert all(a.ends_at_us == b.starts_at_us for a, b in itertools.pairwise(periods))
    assert balance(payments, chart.wallet_account(reader.id, "USD")) == usd("50") - 5 * usd("4.99")
    balances_are_whole(payments, processor)


def test_cancelled_subscription_keeps_access_to_period_end_then_stops(
    payments, processor, clock
) -> None:  # type: ignore[no-untyped-def]
    subs = Subscriptions(payments)
    paper = payments.create_merchant("Gazette", "USD", funding_policy=WALLET_ONLY)
    subs.set_plan(paper.id, "weekly", "Weekly", Period.weekly, usd("1.00"))
    reader = funded_reader(payments, "10.00", "c")
    receipt = subs.subscribe(paper.id, reader.id, "weekly", "k")
    cancelled = subs.cancel(receipt.subscription_id)
    assert cancelled.ok
    assert subs.get(receipt.subscription_id).cancel_at_period_end
    clock.now_us = receipt.period_ends_at_us - 1
    assert payments.has_access(paper.id, reader.id, "weekly")
    clock.now_us = receipt.period_ends_at_us
    assert not payments.has_access(paper.id, reader.id, "weekly")
    outcomes = subs.renew_due()
    assert [o.state for o in outcomes] == [SubscriptionState.cancelled]
    clock.advance(30 * 86_400)
    assert subs.renew_due() == []
    assert subs.cancel(receipt.subscription_id).status is SubscriptionStatus.already_cancelled
    assert len(subs.periods(receipt.subscription_id)) == 1
    assert balance(payments, chart.wallet_account(reader.id, "USD")) == usd("9.00")
    balances_are_whole(payments, processor)


def test_failed_renewal_is_past_due_without_access_until_paid(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    subs = Subscriptions(payments)
    paper = payments.create_merchant("Gazette", "USD", funding_policy=WALLET_ONLY)
    subs.set_plan(paper.id, "daily", "Daily", Period.daily, usd("6.00"))
    reader = funded_reader(payments, "10.00", "d")
    receipt = subs.subscribe(paper.id, reader.id, "daily", "k")
    clock.now_us = receipt.period_ends_at_us + 60_000_000
    [outcome] = subs.renew_due()
    assert (outcome.state, outcome.message) == (SubscriptionState.past_due, "insufficient_funds")
    assert not payments.has_access(paper.id, reader.id, "daily")
    payments.top_up(reader.id, usd("5.00"), "more")
    [paid] = subs.renew_due()
    assert (paid.state, paid.period_number) == (SubscriptionState.active, 1)
    assert payments.has_access(paper.id, reader.id, "daily")
    refused = subs.subscribe(paper.id, reader.id, "nope", "k2")
    assert refused.status is SubscriptionStatus.plan_not_found
    assert subs.subscribe(paper.id, reader.id, "daily", "k3", time_zone="Nowhere/X").status is (
        SubscriptionStatus.time_zone_invalid
    )
    balances_are_whole(payments, processor)


def test_weekly_renewals_across_dst_tile_time(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    subs = Subscriptions(payments)
    paper = payments.create_merchant("Gazette", "USD", funding_policy=WALLET_ONLY)
    clock.now_us = at_us(2024, 3, 8, 15)
    subs.set_plan(paper.id, "daily", "Daily", Period.daily, usd("0.10"))
    reader = funded_reader(payments, "10.00", "t")
    receipt = subs.subscribe(paper.id, reader.id, "daily", "k", time_zone="America/New_York")
    for _ in range(6):  # through the 23-hour day of March 10
        clock.now_us = subs.get(receipt.subscription_id).period_ends_at_us + 1
        subs.renew_due()
        subs.renew_due()
    periods = subs.periods(receipt.subscription_id)
    assert len(periods) == 7
    assert all(a.ends_at_us == b.starts_at_us for a, b in itertools.pairwise(periods))
    lengths_h = [(p.ends_at_us - p.starts_at_us) // 3_600_000_000 for p in periods]
    assert lengths_h == [24, 24, 23, 24, 24, 24, 24]
    balances_are_whole(payments, processor)


# --- concurrency -------------------------------------------------------------------------


def _race(database_url, processor, clock, work, runners: int = 2):  # type: ignore[no-untyped-def]
    barrier = threading.Barrier(runners)
    results: list[object] = []
    errors: list[BaseException] = []

    def run(n: int) -> None:
        own = Payments(open_store(database_url), processor, clock=clock, new_id=IdGenerator(tag=n))
        try:
            barrier.wait(timeout=30)
            results.append(work(own))
        except BaseException as error:  # reported below
            errors.append(error)
        finally:
            own.store.close()

    threads = [threading.Thread(target=run, args=(n,)) for n in range(runners)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    return results


def test_racing_renewals_renew_each_subscription_once(
    payments, processor, clock, database_url
) -> None:  # type: ignore[no-untyped-def]
    subs = Subscriptions(payments)
    paper = payments.create_merchant("Gazette", "USD", funding_policy=WALLET_ONLY)
    subs.set_plan(paper.id, "monthly", "Monthly", Period.monthly, usd("1.00"))
    readers = [funded_reader(payments, "5.00", f"r{n}") for n in range(4)]
    ids = [subs.subscribe(paper.id, r.id, "monthly", f"k{r.id}").subscription_id for r in readers]
    clock.now_us = subs.get(ids[0]).period_ends_at_us + 1
    results = _race(database_url, processor, clock, lambda own: Subscriptions(own).renew_due())
    renewed = sorted(o.subscription_id for outcomes in results for o in outcomes)
    assert renewed == sorted(ids)  # each once, whichever runner won
    for sub_id, reader in zip(ids, readers, strict=True):
        assert [p.period_number for p in subs.periods(sub_id)] == [0, 1]
        assert balance(payments, chart.wallet_account(reader.id, "USD")) == usd("3.00")
    balances_are_whole(payments, processor)


def test_racing_aggregations_bill_each_event_once(payments, processor, clock, database_url) -> None:  # type: ignore[no-untyped-def]
    metering = Metering(payments)
    api = payments.create_merchant("Geo API", "USD", funding_policy=WALLET_ONLY)
    clients = [funded_reader(payments, "5.00", f"u{n}") for n in range(3)]
    metering.set_meter(api.id, "calls", 400)
    for c in clients:
        events = [UsageEvent(c.id, "calls", 1 + n % 3, f"{c.id}-{n}") for n in range(500)]
        assert all(r.ok for r in metering.record_usage_batch(api.id, events))
    clock.advance(60)
    window_end = clock()
    results = _race(
        database_url, processor, clock, lambda own: Metering(own).aggregate_usage(window_end)
    )
    postings = [p for report in results for p in report.postings]
    assert sorted(p.customer_id for p in postings) == sorted(c.id for c in clients)
    expected = sum(1 + n % 3 for n in range(500)) * 400
    assert {p.amount_micros for p in postings} == {expected}
    for c in clients:
        assert metering.unbilled(api.id, c.id) == 0
        assert balance(payments, chart.wallet_account(c.id, "USD")) == usd("5.00") - expected
    balances_are_whole(payments, processor)
