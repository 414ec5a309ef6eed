"""Payouts and revenue sharing as accounting stories, on SQLite and PostgreSQL.

Every story ends with the oracles: the ledger reconciles, and the processor's
payouts equal the payouts posted in the ledger.
"""

from __future__ import annotations

import random
import threading

import pytest
from hypothesis import given
from hypothesis import strategies as st

from micropay.core.accounts import credit_balance_micros
from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments.chart import Kind
from micropay.payments.models import FundingSource, PurchaseStatus, TopUpStatus
from micropay.payments.processor import Outcome, PayoutRequest, PayoutResult
from micropay.payouts.plans import Bucket, Schedule
from micropay.payouts.splits import (
    AllocationError,
    PlatformFee,
    Share,
    allocate,
    reverse_parts,
    split_sale,
)
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.service.payouts import (
    Payouts,
    PayoutsInputError,
    PayoutStatus,
    ReversalStatus,
    SaleStatus,
    VerificationStatus,
    reconcile_payouts,
)
from micropay.service.reconcile import reconcile
from micropay.service.refunds import RefundStatus
from micropay.store import open_store
from micropay.store.payouts_sql import bind_payouts_sql


def usd(text: str) -> int:
    return parse_amount(text, "USD")


class PayoutBook(SimulatedProcessor):
    """The simulated rail, keeping its own books of payouts (and able to time out once)."""

    def __init__(self) -> None:
        super().__init__()
        self.paid: dict[str, tuple[int, str]] = {}
        self.to: dict[str, list[int]] = {}
        self.time_out_next = 0  # pay, then answer "retry" this many times
        self.payout_calls = 0

    def payout(self, request: PayoutRequest) -> PayoutResult:
        self.payout_calls += 1
        result = super().payout(request)
        if result.payout_id not in self.paid:
            self.paid[result.payout_id] = (request.amount_minor, request.currency)
            self.to.setdefault(request.destination_token, []).append(request.amount_minor)
        if self.time_out_next:
            self.time_out_next -= 1
            return PayoutResult(Outcome.retry, message="timed out after paying")
        return result


@pytest.fixture
def processor() -> PayoutBook:
    return PayoutBook()


@pytest.fixture
def payments(store, processor, clock) -> Payments:  # type: ignore[no-untyped-def]
    return Payments(store, processor, clock=clock)


@pytest.fixture
def payouts(payments: Payments) -> Payouts:
    return Payouts(payments, rng=random.Random(7), bind=bind_payouts_sql)


def books_balance(payouts: Payouts, processor: PayoutBook) -> None:
    report = reconcile(payouts.store)
    assert report.ok, report.violations
    assert reconcile_payouts(payouts.store, processor.paid, bind=bind_payouts_sql) == []


def balance(payments: Payments, account_id: int) -> int:
    return credit_balance_micros(payments.ledger.accounts([account_id])[account_id])


def shop(payments: Payments, price: str) -> tuple[int, int]:
    """A merchant selling one book at ``price``, and a reader with 10.00 USD in her wallet."""
    merchant = payments.create_merchant("Press", "USD", funding_policy=(FundingSource.wallet,))
    payments.set_item(merchant.id, "book", "A book", usd(price))
    reader = payments.create_customer("USD", processor_customer_token="c", payment_method_token="p")
    assert payments.top_up(reader.id, usd("10.00"), "load").status is TopUpStatus.ok
    return merchant.id, reader.id


def buy(payments: Payments, merchant_id: int, customer_id: int, key: str) -> int:
    receipt = payments.purchase(merchant_id, customer_id, "book", key)
    assert receipt.status is PurchaseStatus.ok
    return receipt.purchase_id


def verify(payouts: Payouts, processor: PayoutBook, payee_id: int, token: str) -> int:
    """Micro-deposit verification done right; returns the amount taken back."""
    assert payouts.start_verification(payee_id).status is VerificationStatus.deposits_sent
    first, second = (a * 10_000 for a in processor.to[token])
    assert payouts.confirm_deposits(payee_id, second, first).status is VerificationStatus.verified
    return first + second


# --- allocation: pure ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("whole", "weights", "parts"),
    [
        (100, [1, 1, 1], [34, 33, 33]),  # tie: the earliest part gets the extra unit
        (237_500, [3_334, 3_333, 3_333], [79_182, 79_159, 79_159]),
        (1, [1, 1], [1, 0]),
        (0, [7, 3], [0, 0]),
        (10, [0, 5, 5], [0, 5, 5]),
    ],
)
def test_largest_remainder_table(whole: int, weights: list[int], parts: list[int]) -> None:
    assert allocate(whole, weights) == parts


@given(
    st.integers(0, 10**15),
    st.lists(st.integers(0, 10_000), min_size=1, max_size=50).filter(lambda w: sum(w) > 0),
)
def test_parts_always_sum_to_the_whole(whole: int, weights: list[int]) -> None:
    parts = allocate(whole, weights)
    assert sum(parts) == whole
    total = sum(weights)
    for part, weight in zip(parts, weights, strict=True):
        assert whole * weight // total <= part <= -(-whole * weight // total)


@given(st.lists(st.integers(0, 10**9), min_size=1, max_size=8), st.data())
def test_partial_refunds_never_take_more_than_a_part_holds(
    remaining: list[int], data: st.DataObject
) -> None:
    left = list(remaining)
    for _ in range(5):
        refund = data.draw(st.integers(0, sum(left)))
        taken = reverse_parts(refund, left) if sum(left) else [0] * len(left)
        assert sum(taken) == refund
        assert all(0 <= t <= r for t, r in zip(taken, left, strict=True))
        left = [r - t for r, t in zip(left, taken, strict=True)]


def test_bad_allocations_are_refused() -> None:
    with pytest.raises(ValueError, match="positive"):
        allocate(10, [0, 0])
    with pytest.raises(ValueError, match="whole"):
        allocate(-1, [1])
    with pytest.raises(ValueError, match="10,000"):
        split_sale(100, PlatformFee(), [Share(1, 5_000), Share(2, 4_999)])
    with pytest.raises(ValueError, match="fee_bps"):
        PlatformFee(fee_bps=10_001)
    assert PlatformFee(500, usd("0.30")).fee_micros(usd("0.10")) == usd("0.10")  # capped
    assert issubclass(AllocationError, RuntimeError)


# --- worked examples ---------------------------------------------------------------


def test_a_sale_split_three_ways_with_a_remainder(payments, payouts, processor, clock) -> None:  # type: ignore[no-untyped-def]
    """A 0.25 USD book, 5% platform fee; author, editor and illustrator share the rest.

    0.2375 USD shared 33.34 / 33.33 / 33.33% is 79,182.5 / 79,158.75 / 79,158.75
    micros: the floors leave 2 micros, which go to the two largest remainders.
    """
    merchant_id, reader_id = shop(payments, "0.25")
    author, editor, illustrator = (
        payouts.create_payee(name, "USD", f"ba_{name}") for name in ("author", "editor", "ill")
    )
    payouts.set_platform_fee(merchant_id, PlatformFee(fee_bps=500))
    payouts.set_split(
        merchant_id,
        "book",
        [Share(author.id, 3_334), Share(editor.id, 3_333), Share(illustrator.id, 3_333)],
    )
    purchase_id = buy(payments, merchant_id, reader_id, "buy-1")
    sale = payouts.record_sale(purchase_id)
    assert sale.status is SaleStatus.ok
    assert sale.fee_micros == 12_500
    assert sale.parts == ((author.id, 79_182), (editor.id, 79_159), (illustrator.id, 79_159))
    assert payouts.record_sale(purchase_id).status is SaleStatus.already_recorded
    assert balance(payments, chart.payable_account(merchant_id, "USD")) == 0
    assert balance(payments, chart.platform_account(Kind.platform_revenue, "USD")) == 12_500
    assert payouts.balances(author.id) == {
        Bucket.pending: 79_182,
        Bucket.available: 0,
        Bucket.deposits: 0,
    }

    clock.advance(7 * 86_400 - 1)
    assert payouts.release_due() == 0  # one second early
    clock.advance(1)
    assert payouts.release_due() == 3
    assert payouts.release_due() == 0  # released once
    assert payouts.balances(editor.id)[Bucket.available] == 79_159
    assert payouts.balances(editor.id)[Bucket.pending] == 0
    csv_text = payouts.statement_csv(editor.id, 0, clock() + 1)
    assert csv_text.splitlines()[1:] == [
        f"{line},sale:{purchase_id},{amount}"
        for line, amount in (
            ("2026-01-01T00:00:00+00:00,pending,sale_share", "0.079159,0.079159"),
            ("2026-01-08T00:00:00+00:00,pending,share_release", "-0.079159,0.00"),
            ("2026-01-08T00:00:00+00:00,available,share_release", "0.079159,0.079159"),
        )
    ]
    books_balance(payouts, processor)


def test_a_refund_during_the_hold_comes_out_of_pending(payments, payouts, processor, clock) -> None:  # type: ignore[no-untyped-def]
    merchant_id, reader_id = shop(payments, "0.25")
    author = payouts.create_payee("author", "USD", "ba_author")
    editor = payouts.create_payee("editor", "USD", "ba_editor")
    payouts.set_platform_fee(merchant_id, PlatformFee(fee_bps=1_000))
    payouts.set_split(merchant_id, "book", [Share(author.id, 7_000), Share(editor.id, 3_000)])
    purchase_id = buy(payments, merchant_id, reader_id, "buy-1")
    assert payouts.record_sale(purchase_id).parts == ((author.id, 157_500), (editor.id, 67_500))

    clock.advance(86_400)
    first = payments.refunds.refund(purchase_id, usd("0.10"), "r1")
    assert first.status is RefundStatus.ok
    taken = payouts.on_refund(first.refund_id)
    assert taken.status is ReversalStatus.ok
    assert taken.fee_micros == 10_000
    assert taken.parts == ((author.id, Bucket.pending, 63_000), (editor.id, Bucket.pending, 27_000))
    assert payouts.on_refund(first.refund_id).status is ReversalStatus.already_reversed
    rest = payments.refunds.refund(purchase_id, usd("0.15"), "r2")
    assert payouts.on_refund(rest.refund_id).status is ReversalStatus.ok

    for payee in (author, editor):
        assert payouts.balances(payee.id)[Bucket.pending] == 0
    assert balance(payments, chart.platform_account(Kind.platform_revenue, "USD")) == 0
    assert balance(payments, chart.payable_account(merchant_id, "USD")) == 0
    clock.advance(7 * 86_400)
    payouts.release_due()
    assert payouts.balances(author.id)[Bucket.available] == 0
    books_balance(payouts, processor)


def test_a_refund_after_payout_leaves_a_debt_that_the_next_sales_repay(
    payments, payouts, processor, clock
) -> None:  # type: ignore[no-untyped-def]
    merchant_id, reader_id = shop(payments, "2.00")
    author = payouts.create_payee(
        "author", "USD", "ba_author", schedule=Schedule.daily, threshold_micros=usd("1.00")
    )
    payouts.set_split(merchant_id, "book", [Share(author.id, 10_000)])
    deposits = verify(payouts, processor, author.id, "ba_author")
    assert payouts.balances(author.id)[Bucket.available] == -deposits  # repaid by earnings

    sold = buy(payments, merchant_id, reader_id, "buy-1")
    payouts.record_sale(sold)
    clock.advance(7 * 86_400)
    payouts.release_due()
    [paid] = payouts.run_payouts()
    assert paid.status is PayoutStatus.succeeded
    assert paid.amount_micros == usd("2.00") - deposits
    assert payouts.balances(author.id)[Bucket.available] == 0

    refund = payments.refunds.refund(sold, usd("2.00"), "r1")
    assert payouts.on_refund(refund.refund_id).parts == ((author.id, Bucket.available, 2_000_000),)
    assert payouts.balances(author.id)[Bucket.available] == -usd("2.00")  # the author owes

    payouts.record_sale(buy(payments, merchant_id, reader_id, "buy-2"))
    clock.advance(7 * 86_400)
    payouts.release_due()
    assert payouts.balances(author.id)[Bucket.available] == 0  # the debt is repaid first
    assert [p for p in payouts.run_payouts() if p.payout_id != paid.payout_id] == []

    payments.set_item(merchant_id, "book2", "Book two", usd("2.00"))
    payouts.set_split(merchant_id, "book2", [Share(author.id, 10_000)])
    receipt = payments.purchase(merchant_id, reader_id, "book2", "buy-3")
    payouts.record_sale(receipt.purchase_id)
    clock.advance(7 * 86_400)
    payouts.release_due()
    fresh = [p for p in payouts.run_payouts() if p.payout_id != paid.payout_id]
    assert [p.amount_micros for p in fresh] == [usd("2.00")]
    assert sorted(processor.to["ba_author"][2:]) == sorted([200 - deposits // 10_000, 200])
    books_balance(payouts, processor)


def test_micro_deposits_a_wrong_guess_then_a_right_one(payments, payouts, processor, clock) -> None:  # type: ignore[no-untyped-def]
    merchant_id, reader_id = shop(payments, "2.00")
    author = payouts.create_payee(
        "author", "USD", "ba_author", schedule=Schedule.daily, threshold_micros=usd("1.00")
    )
    payouts.set_split(merchant_id, "book", [Share(author.id, 10_000)])
    payouts.record_sale(buy(payments, merchant_id, reader_id, "buy-1"))
    clock.advance(7 * 86_400)
    payouts.release_due()
    assert payouts.run_payouts() == []  # earned 2.00, above threshold, but unverified
    assert processor.paid == {}

    started = payouts.start_verification(author.id)
    assert started == type(started)(VerificationStatus.deposits_sent, 3)
    assert payouts.start_verification(author.id).status is VerificationStatus.already_started
    first, second = processor.to["ba_author"]
    assert 1 <= first <= 99
    assert 1 <= second <= 99
    assert payouts.balances(author.id)[Bucket.deposits] == -(first + second) * 10_000

    wrong = payouts.confirm_deposits(author.id, (first % 99 + 1) * 10_000, second * 10_000)
    assert (wrong.status, wrong.attempts_left) == (VerificationStatus.wrong_amounts, 2)
    assert payouts.run_payouts() == []  # still unverified
    right = payouts.confirm_deposits(author.id, first * 10_000, second * 10_000)
    assert right.status is VerificationStatus.verified
    assert payouts.get_payee(author.id).verified  # type: ignore[union-attr]
    assert payouts.balances(author.id)[Bucket.deposits] == 0  # taken back
    assert payouts.balances(author.id)[Bucket.available] == usd("2.00") - (first + second) * 10_000
    [paid] = payouts.run_payouts()
    assert paid.amount_micros == usd("2.00") - (first + second) * 10_000
    assert payouts.confirm_deposits(author.id, 1, 2).status is VerificationStatus.already_verified
    books_balance(payouts, processor)


def test_too_many_wrong_guesses_lock_verification(payments, payouts, processor) -> None:  # type: ignore[no-untyped-def]
    author = payouts.create_payee("author", "USD", "ba_author")
    assert payouts.confirm_deposits(author.id, 1, 2).status is VerificationStatus.not_started
    payouts.start_verification(author.id)
    first, second = (a * 10_000 for a in processor.to["ba_author"])
    outcomes = [payouts.confirm_deposits(author.id, 1, 2).status for _ in range(3)]
    assert outcomes == [
        VerificationStatus.wrong_amounts,
        VerificationStatus.wrong_amounts,
        VerificationStatus.locked,
    ]
    assert payouts.confirm_deposits(author.id, first, second).status is VerificationStatus.locked
    assert payouts.start_verification(author.id).status is VerificationStatus.locked
    assert not payouts.get_payee(author.id).verified  # type: ignore[union-attr]
    assert payouts.balances(author.id)[Bucket.deposits] == -(first + second)  # not taken back
    books_balance(payouts, processor)


def test_a_payout_run_executed_twice_pays_once(payments, payouts, processor, clock) -> None:  # type: ignore[no-untyped-def]
    merchant_id, reader_id = shop(payments, "3.00")
    author = payouts.create_payee(
        "author", "USD", "ba_author", schedule=Schedule.weekly, threshold_micros=usd("1.00")
    )
    payouts.set_split(merchant_id, "book", [Share(author.id, 10_000)])
    deposits = verify(payouts, processor, author.id, "ba_author")
    payouts.record_sale(buy(payments, merchant_id, reader_id, "buy-1"))
    clock.advance(7 * 86_400)
    payouts.release_due()

    processor.time_out_next = 1  # the rail pays, but the answer is lost
    [first] = payouts.run_payouts()
    assert first.status is PayoutStatus.pending
    [again] = payouts.run_payouts()  # same period: the pending payout, asked with its key
    assert (again.payout_id, again.status) == (first.payout_id, PayoutStatus.succeeded)
    assert payouts.run_payouts() == []
    assert len(processor.paid) == 3  # two micro-deposits and one payout
    assert processor.to["ba_author"][2:] == [300 - deposits // 10_000]
    assert payouts.balances(author.id)[Bucket.available] == 0
    books_balance(payouts, processor)


def test_racing_payout_runs_pay_once(database_url, processor, clock) -> None:  # type: ignore[no-untyped-def]
    """Two processes run payouts at the same moment: one payout, and the books agree."""
    stores = [open_store(database_url) for _ in range(2)]
    try:
        runs = [
            Payouts(
                Payments(s, processor, clock=clock), rng=random.Random(1), bind=bind_payouts_sql
            )
            for s in stores
        ]
        payments = runs[0].payments
        merchant_id, reader_id = shop(payments, "5.00")
        author = runs[0].create_payee(
            "author", "USD", "ba_author", schedule=Schedule.daily, threshold_micros=usd("1.00")
        )
        runs[0].set_split(merchant_id, "book", [Share(author.id, 10_000)])
        verify(runs[0], processor, author.id, "ba_author")
        runs[0].record_sale(buy(payments, merchant_id, reader_id, "buy-1"))
        clock.advance(7 * 86_400)
        runs[0].release_due()

        barrier = threading.Barrier(2, timeout=10)
        errors: list[BaseException] = []

        def race(run: Payouts) -> None:
            try:
                barrier.wait()
                run.run_payouts()
            except BaseException as error:  # reported below
                errors.append(error)

        threads = [threading.Thread(target=race, args=(r,)) for r in runs]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == []
        assert not any(t.is_alive() for t in threads)
        assert len(processor.to["ba_author"]) == 3  # two micro-deposits, one payout
        books_balance(runs[0], processor)
    finally:
        for s in stores:
            s.close()


def test_bad_setup_is_refused_and_writes_nothing(payments, payouts) -> None:  # type: ignore[no-untyped-def]
    merchant_id, _ = shop(payments, "1.00")
    author = payouts.create_payee("author", "USD", "ba_author")
    euro = payouts.create_payee("euro", "EUR", "ba_euro")
    for shares in (
        [Share(author.id, 9_999)],
        [Share(author.id, 5_000), Share(author.id, 5_000)],
        [Share(author.id, 5_000), Share(euro.id, 5_000)],
        [Share(author.id, 5_000), Share(999_999, 5_000)],
        [],
    ):
        with pytest.raises(PayoutsInputError):
            payouts.set_split(merchant_id, "book", shares)
    with pytest.raises(PayoutsInputError):
        payouts.set_split(merchant_id, "no-such-item", [Share(author.id, 10_000)])
    with pytest.raises(PayoutsInputError):
        payouts.create_payee("x", "XXX", "ba")
    with pytest.raises(PayoutsInputError):
        payouts.create_payee("x", "USD", "")
    with pytest.raises(PayoutsInputError):
        payouts.set_platform_fee(999_999, PlatformFee(100))
    assert payouts.tx(lambda tx: payouts_sql_split(tx, merchant_id)) == []
    assert payouts.record_sale(999_999).status is SaleStatus.purchase_not_found
    assert payouts.on_refund(999_999).status is ReversalStatus.refund_not_found
    assert payouts.start_verification(999_999).status is VerificationStatus.payee_not_found


def payouts_sql_split(tx, merchant_id: int):  # type: ignore[no-untyped-def]
    return bind_payouts_sql(tx).get_split(merchant_id, "book")


def test_attached_payouts_split_every_paid_purchase_and_refund(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    """With ``attach=True`` the purchase and the refund themselves move the payees' money,
    in their own transactions: no separate call to forget."""
    attached = Payouts(payments, rng=random.Random(7), attach=True)
    merchant_id, reader_id = shop(payments, "0.25")
    author = attached.create_payee("author", "USD", "ba_author")
    attached.set_platform_fee(merchant_id, PlatformFee(fee_bps=1_000))
    attached.set_split(merchant_id, "book", [Share(author.id, 10_000)])
    purchase_id = buy(payments, merchant_id, reader_id, "buy-1")
    assert attached.balances(author.id)[Bucket.pending] == 225_000
    assert attached.record_sale(purchase_id).status is SaleStatus.already_recorded
    assert payments.refunds.refund(purchase_id, usd("0.25"), "r1").status is RefundStatus.ok
    assert attached.balances(author.id)[Bucket.pending] == 0
    books_balance(attached, processor)
