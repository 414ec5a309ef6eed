"""Tips for an item reach the item's payees, as worked examples on SQLite and PostgreSQL.

A tip that names an item with a revenue split is split exactly like that
item's sales (platform fee, largest-remainder shares, holding period, payee
balances and thresholds), in the tip's own transaction (``Payouts(...,
attach=True)`` joins the tip hooks). Every story ends with the oracles: the
ledger reconciles, and the processor's payouts equal the ledger's.
"""

from __future__ import annotations

import random

import pytest

from micropay.payments import chart
from micropay.payments.billing import TipStatus
from micropay.payments.chart import Kind
from micropay.payments.models import FundingSource, TopUpStatus
from micropay.payouts.plans import Bucket, Schedule
from micropay.payouts.splits import PlatformFee, Share
from micropay.service.billing import TipPaid, Tips
from micropay.service.payments import Payments
from micropay.service.payouts import Payouts, PayoutStatus, SaleStatus
from micropay.service.refunds import RefundStatus
from micropay.store.payouts_sql import bind_payouts_sql
from test_payouts import PayoutBook, balance, books_balance, usd, verify

DAY_S = 86_400


@pytest.fixture
def processor() -> PayoutBook:
    return PayoutBook()


@pytest.fixture
def payments(store, processor, clock) -> Payments:  # type: ignore[no-untyped-def]
    return Payments(store, processor, clock=clock)


@pytest.fixture
def payouts(payments: Payments) -> Payouts:
    return Payouts(payments, rng=random.Random(7), attach=True)


def jar(payments: Payments) -> tuple[int, int]:
    """A creator's merchant with a ``page`` and a ``song``, and a fan with 20.00 USD."""
    merchant = payments.create_merchant("Creator", "USD", funding_policy=(FundingSource.wallet,))
    payments.set_item(merchant.id, "page", "The creator's page", usd("1.00"))
    payments.set_item(merchant.id, "song", "A song", usd("0.99"))
    fan = payments.create_customer("USD", processor_customer_token="c", payment_method_token="p")
    assert payments.top_up(fan.id, usd("20.00"), "load").status is TopUpStatus.ok
    return merchant.id, fan.id


def sale_rows(payments: Payments) -> int:
    with payments.store.write() as tx:
        tx._cur.execute("SELECT purchase_id FROM sales")
        return len(tx._cur.fetchall())


def tip_rows(payments: Payments) -> list[tuple[int, str]]:
    with payments.store.write() as tx:
        tx._cur.execute("SELECT id, item_ref FROM tips ORDER BY id")
        return [(int(r[0]), str(r[1])) for r in tx._cur.fetchall()]


def test_a_tip_for_an_item_is_split_70_30_with_a_remainder(payments, payouts, processor) -> None:  # type: ignore[no-untyped-def]
    """A 1.23 USD tip for the page, 3.33% platform fee, author 70% / publisher 30%.

    Fee: 1,230,000 x 333 // 10,000 = 40,959 micros. The rest, 1,189,041, is
    832,328.7 / 356,712.3: the floors leave 1 micro, which goes to the larger
    remainder (the author's .7).
    """
    merchant_id, fan_id = jar(payments)
    author = payouts.create_payee("author", "USD", "ba_author")
    publisher = payouts.create_payee("publisher", "USD", "ba_publisher")
    payouts.set_platform_fee(merchant_id, PlatformFee(fee_bps=333))
    payouts.set_split(merchant_id, "page", [Share(author.id, 7_000), Share(publisher.id, 3_000)])

    receipt = Tips(payments).tip(merchant_id, fan_id, usd("1.23"), "t1", "thanks", item_ref="page")
    assert receipt.status is TipStatus.ok
    assert receipt.item_ref == "page"
    assert payouts.balances(author.id)[Bucket.pending] == 832_329
    assert payouts.balances(publisher.id)[Bucket.pending] == 356_712
    assert balance(payments, chart.platform_account(Kind.platform_revenue, "USD")) == 40_959
    assert balance(payments, chart.payable_account(merchant_id, "USD")) == 0
    with payments.store.write() as tx:
        sale = bind_payouts_sql(tx).get_sale(receipt.tip_id)
        shares = bind_payouts_sql(tx).sale_shares(receipt.tip_id)
    assert sale is not None
    assert (sale.gross_micros, sale.fee_micros) == (1_230_000, 40_959)
    assert [(s.payee_id, s.amount_micros) for s in shares] == [
        (author.id, 832_329),
        (publisher.id, 356_712),
    ]
    assert tip_rows(payments) == [(receipt.tip_id, "page")]
    csv_text = payouts.statement_csv(author.id, 0, payments.clock() + 1)
    assert f"pending,sale_share,tip:{receipt.tip_id},0.832329," in csv_text
    books_balance(payouts, processor)


def test_a_replayed_tip_records_nothing_twice(payments, payouts, processor) -> None:  # type: ignore[no-untyped-def]
    merchant_id, fan_id = jar(payments)
    author = payouts.create_payee("author", "USD", "ba_author")
    payouts.set_split(merchant_id, "page", [Share(author.id, 10_000)])
    tips = Tips(payments)
    first = tips.tip(merchant_id, fan_id, usd("2.00"), "t1", item_ref="page")
    again = Tips(payments).tip(merchant_id, fan_id, usd("2.00"), "t1", item_ref="page")
    assert (again.status, again.replayed, again.tip_id) == (TipStatus.ok, True, first.tip_id)
    assert again.item_ref == "page"
    assert payouts.balances(author.id)[Bucket.pending] == usd("2.00")
    assert sale_rows(payments) == 1
    # The item is part of the request: the same key for another item (or none) is refused.
    other = tips.tip(merchant_id, fan_id, usd("2.00"), "t1", item_ref="song")
    bare = tips.tip(merchant_id, fan_id, usd("2.00"), "t1")
    assert other.status is bare.status is TipStatus.idempotency_key_reused
    # The hook itself, called again for the same tip, writes nothing more.
    paid = TipPaid(first.tip_id, merchant_id, fan_id, usd("2.00"), "USD", "page", 0)
    outcome = payments.charges.tx(lambda tx: payouts._record_tip_in(tx, paid))
    assert outcome.status is SaleStatus.already_recorded
    assert payouts.balances(author.id)[Bucket.pending] == usd("2.00")
    assert balance(payments, chart.wallet_account(fan_id, "USD")) == usd("18.00")
    books_balance(payouts, processor)


def test_a_tip_without_an_item_or_without_a_split_stays_the_merchants(
    payments, payouts, processor
) -> None:  # type: ignore[no-untyped-def]
    merchant_id, fan_id = jar(payments)
    author = payouts.create_payee("author", "USD", "ba_author")
    payouts.set_split(merchant_id, "page", [Share(author.id, 10_000)])
    tips = Tips(payments)
    plain = tips.tip(merchant_id, fan_id, usd("1.00"), "t1")
    for_song = tips.tip(merchant_id, fan_id, usd("0.50"), "t2", item_ref="song")  # no split
    assert plain.ok
    assert for_song.ok
    assert (plain.item_ref, for_song.item_ref) == (None, "song")
    assert balance(payments, chart.payable_account(merchant_id, "USD")) == usd("1.50")
    assert payouts.balances(author.id)[Bucket.pending] == 0
    assert sale_rows(payments) == 0
    assert tip_rows(payments) == sorted([(plain.tip_id, ""), (for_song.tip_id, "song")])
    books_balance(payouts, processor)


def test_an_unknown_item_is_refused_and_writes_nothing(payments, payouts, processor) -> None:  # type: ignore[no-untyped-def]
    merchant_id, fan_id = jar(payments)
    author = payouts.create_payee("author", "USD", "ba_author")
    payouts.set_split(merchant_id, "page", [Share(author.id, 10_000)])
    tips = Tips(payments)
    for ref in ("no-such-page", "", "x" * 129):
        refused = tips.tip(merchant_id, fan_id, usd("1.00"), f"t-{len(ref)}", item_ref=ref)
        assert refused.status is TipStatus.item_not_found, ref
        assert not refused.ok
    assert tip_rows(payments) == []
    assert sale_rows(payments) == 0
    assert balance(payments, chart.wallet_account(fan_id, "USD")) == usd("20.00")
    # The key was not used up: the same key for a known item tips.
    assert tips.tip(merchant_id, fan_id, usd("1.00"), "t-12", item_ref="page").ok
    books_balance(payouts, processor)


def test_a_tip_is_held_then_paid_out_at_the_threshold(payments, payouts, processor, clock) -> None:  # type: ignore[no-untyped-def]
    """Threshold 5.00 USD, 7-day hold, daily payouts: a 3.00 tip on day 0 and one on day 3.

    Day 7 releases the first (3.00 less the micro-deposits taken back: below the
    threshold, nothing is paid); day 10 releases the second and pays 6.00 less
    the deposits, in whole cents.
    """
    merchant_id, fan_id = jar(payments)
    author = payouts.create_payee(
        "author",
        "USD",
        "ba_author",
        schedule=Schedule.daily,
        threshold_micros=usd("5.00"),
        hold_s=7 * DAY_S,
    )
    payouts.set_split(merchant_id, "page", [Share(author.id, 10_000)])
    deposits = verify(payouts, processor, author.id, "ba_author")
    tips = Tips(payments)
    assert tips.tip(merchant_id, fan_id, usd("3.00"), "t1", item_ref="page").ok
    clock.advance(3 * DAY_S)
    assert tips.tip(merchant_id, fan_id, usd("3.00"), "t2", item_ref="page").ok
    assert payouts.balances(author.id)[Bucket.pending] == usd("6.00")

    clock.advance(4 * DAY_S - 1)  # one second before the first tip's hold ends
    assert payouts.release_due() == 0
    clock.advance(1)
    assert payouts.release_due() == 1
    assert payouts.balances(author.id)[Bucket.available] == usd("3.00") - deposits
    assert payouts.run_payouts() == []  # below the threshold

    clock.advance(3 * DAY_S)
    assert payouts.release_due() == 1
    [paid] = payouts.run_payouts()
    assert paid.status is PayoutStatus.succeeded
    assert paid.amount_micros == usd("6.00") - deposits
    assert processor.to["ba_author"][2:] == [600 - deposits // 10_000]
    assert payouts.balances(author.id) == {
        Bucket.pending: 0,
        Bucket.available: 0,
        Bucket.deposits: 0,
    }
    assert payouts.run_payouts() == []  # once
    books_balance(payouts, processor)


def test_tips_cannot_be_refunded_so_nothing_is_taken_back(payments, payouts, processor) -> None:  # type: ignore[no-untyped-def]
    """Refunds are of purchases only: a tip's id names no purchase to refund."""
    merchant_id, fan_id = jar(payments)
    author = payouts.create_payee("author", "USD", "ba_author")
    payouts.set_split(merchant_id, "page", [Share(author.id, 10_000)])
    tip = Tips(payments).tip(merchant_id, fan_id, usd("1.00"), "t1", item_ref="page")
    refund = payments.refunds.refund(tip.tip_id, usd("1.00"), "r1")
    assert refund.status is RefundStatus.purchase_not_found
    assert payouts.balances(author.id)[Bucket.pending] == usd("1.00")
    books_balance(payouts, processor)


def test_a_failing_hook_rolls_the_tip_back(payments, payouts, processor) -> None:  # type: ignore[no-untyped-def]
    """The split is written in the tip's transaction: a tip and its earnings commit together."""
    merchant_id, fan_id = jar(payments)
    author = payouts.create_payee("author", "USD", "ba_author")
    payouts.set_split(merchant_id, "page", [Share(author.id, 10_000)])
    tips = Tips(payments)

    def boom(tx: object, paid: TipPaid) -> None:
        raise RuntimeError("crash after the split")

    tips.tip_hooks.append(boom)
    with pytest.raises(RuntimeError, match="crash after the split"):
        tips.tip(merchant_id, fan_id, usd("1.00"), "t1", item_ref="page")
    tips.tip_hooks.remove(boom)
    assert tip_rows(payments) == []
    assert sale_rows(payments) == 0
    assert payouts.balances(author.id)[Bucket.pending] == 0
    assert balance(payments, chart.wallet_account(fan_id, "USD")) == usd("20.00")
    assert tips.tip(merchant_id, fan_id, usd("1.00"), "t1", item_ref="page").ok
    assert payouts.balances(author.id)[Bucket.pending] == usd("1.00")
    books_balance(payouts, processor)
