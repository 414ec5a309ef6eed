"""A payee's readable statement per period: the same figures as the CSV, and they balance."""

from __future__ import annotations

import csv
import io
import random

import pytest

from micropay.core.money import format_amount, parse_amount
from micropay.payouts.plans import Bucket, PayoutCode, Schedule
from micropay.payouts.splits import PlatformFee, Share
from micropay.service.payments import Payments
from micropay.service.payouts import Payouts
from micropay.store.payouts_sql import bind_payouts_sql
from test_payouts import PayoutBook, books_balance, buy, shop, usd, verify


@pytest.fixture
def processor() -> PayoutBook:
    return PayoutBook()


@pytest.fixture
def payments(store, processor, clock) -> Payments:  # type: ignore[no-untyped-def]
    return Payments(store, processor, clock=clock)


@pytest.fixture
def payouts(payments: Payments) -> Payouts:
    return Payouts(payments, rng=random.Random(7), bind=bind_payouts_sql)


# --- readable statements --------------------------------------------------------------


def _csv_lines(csv_text: str) -> dict[str, int]:
    """The CSV's amounts summed by statement line (moves between own accounts excluded)."""
    from micropay.service.payouts.statements import LINE_OF_CODE, LINES

    line_of = {PayoutCode(code).name: line for code, line in LINE_OF_CODE.items()}
    internal = {"share_release", "micro_deposit_return"}
    sums = dict.fromkeys(LINES, 0)
    for row in csv.DictReader(io.StringIO(csv_text)):
        if row["movement"] not in internal:
            sums[line_of.get(row["movement"], "other")] += parse_amount(row["amount"], "USD")
    return sums


def test_readable_statement_reconciles_with_the_csv(payments, payouts, processor, clock) -> None:  # type: ignore[no-untyped-def]
    """Week 1: verification and a sale; week 2: release and payout; week 3: a refund, a sale."""
    merchant_id, reader_id = shop(payments, "2.00")
    author = payouts.create_payee(
        "author", "USD", "ba_author", schedule=Schedule.daily, threshold_micros=usd("1.00")
    )
    payouts.set_platform_fee(merchant_id, PlatformFee(fee_bps=1_000))
    payouts.set_split(merchant_id, "book", [Share(author.id, 10_000)])
    week1 = clock()
    deposits = verify(payouts, processor, author.id, "ba_author")
    sold = buy(payments, merchant_id, reader_id, "buy-1")
    payouts.record_sale(sold)
    clock.advance(7 * 86_400)
    week2 = clock()
    payouts.release_due()
    [paid] = payouts.run_payouts()
    assert paid.amount_micros == usd("1.80") - deposits
    clock.advance(7 * 86_400)
    week3 = clock()
    refund = payments.refunds.refund(sold, usd("1.00"), "r1")
    payouts.on_refund(refund.refund_id)
    payments.set_item(merchant_id, "book2", "Book two", usd("2.00"))
    payouts.set_split(merchant_id, "book2", [Share(author.id, 10_000)])
    payouts.record_sale(payments.purchase(merchant_id, reader_id, "book2", "buy-2").purchase_id)
    end = clock() + 1

    s1 = payouts.statement(author.id, week1, week2)
    assert (s1.opening_micros, s1.closing_micros) == (0, usd("1.80") - deposits)
    assert s1.lines == {
        "sales": usd("1.80"),
        "refunds": 0,
        "fees": 0,
        "payouts": -deposits,  # the micro-deposits went to the bank account
        "other": 0,
    }
    s2 = payouts.statement(author.id, week2, week3)
    assert s2.opening_micros == s1.closing_micros
    assert s2.lines["payouts"] == -paid.amount_micros
    assert s2.closing_micros == 0
    s3 = payouts.statement(author.id, week3, end)
    assert s3.lines["refunds"] == -usd("0.90")  # 90% of the 1.00 refund was the author's
    assert s3.lines["sales"] == usd("1.80")
    assert s3.closing_micros == usd("0.90")
    assert s3.closing_by_bucket == {
        Bucket.pending: usd("1.80"),
        Bucket.available: -usd("0.90"),
        Bucket.deposits: 0,
    }
    assert s3.closing_micros == sum(payouts.balances(author.id).values())
    for s, (start, stop) in zip(
        (s1, s2, s3), ((week1, week2), (week2, week3), (week3, end)), strict=True
    ):
        assert s.balanced()
        assert _csv_lines(payouts.statement_csv(author.id, start, stop)) == s.lines
    whole = payouts.statement(author.id, week1, end)
    assert whole.closing_micros == s3.closing_micros
    assert {k: s1.lines[k] + s2.lines[k] + s3.lines[k] for k in s1.lines} == whole.lines

    text = payouts.statement_text(author.id, week2, week3)
    assert "Statement for author" in text
    assert "Period 2026-01-08 00:00:00 UTC to 2026-01-15 00:00:00 UTC" in text
    figures = {
        line[:28].strip(): line[28:].split()[0] for line in text.splitlines() if line[28:].strip()
    }
    assert figures["Opening balance"] == format_amount(s2.opening_micros, "USD")
    assert figures["Payouts"] == format_amount(-paid.amount_micros, "USD")
    assert figures["Closing balance"] == "0.00"
    assert f"payout:{paid.payout_id}" in text
    with pytest.raises(ValueError, match="end after"):
        payouts.statement(author.id, week2, week2)
    with pytest.raises(KeyError):
        payouts.statement_text(999_999, week1, end)
    books_balance(payouts, processor)
