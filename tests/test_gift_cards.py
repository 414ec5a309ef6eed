"""Gift cards, vouchers and merchant store credit, as accounting stories on both stores.

Every story ends with the oracles: the ledger reconciles and the processor's
books equal the charges credited in the ledger.
"""

from __future__ import annotations

import hashlib
import hmac
import threading
from collections.abc import Callable

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from micropay.core.accounts import credit_balance_micros, debit_balance_micros
from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments import gift_cards as gc
from micropay.payments.chart import Kind
from micropay.payments.gift_cards import IssueStatus, RedeemStatus
from micropay.payments.models import FundingSource, PurchaseStatus, TopUpStatus
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.gift_cards import GiftCards
from micropay.service.payments import Payments
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.store import open_store

WALLET_ONLY = (FundingSource.wallet,)
DAY_S = 86_400


def usd(text: str) -> int:
    return parse_amount(text, "USD")


@pytest.fixture
def processor() -> SimulatedProcessor:
    return SimulatedProcessor()


@pytest.fixture
def payments(store, processor, clock) -> Payments:  # type: ignore[no-untyped-def]
    return Payments(store, processor, clock=clock)


@pytest.fixture
def cards(payments: Payments) -> GiftCards:
    return GiftCards(payments, pepper=b"test pepper")


def balances_are_whole(payments: Payments, processor: SimulatedProcessor) -> None:
    report = reconcile(payments.store)
    assert report.ok, report.violations
    assert reconcile_processor(payments.store, processor.succeeded_charges()) == []


def credit(payments: Payments, account_id: int) -> int:
    return credit_balance_micros(payments.ledger.accounts([account_id])[account_id])


def ledger_snapshot(payments: Payments) -> tuple[list[object], int]:
    with payments.store.read() as reader:
        accounts = sorted(reader.iter_accounts(), key=lambda a: a.id)
        transfers = sum(1 for _ in reader.iter_transfers())
    return list(accounts), transfers


def flip(code: str, position: int) -> str:
    """``code`` with the symbol at ``position`` (hyphens skipped) replaced by another one."""
    symbols = code.replace("-", "")
    wrong = gc.ALPHABET[(gc.ALPHABET.index(symbols[position]) + 7) % 32]
    return symbols[:position] + wrong + symbols[position + 1 :]


def earning_merchant(payments: Payments, earned: str) -> tuple[int, int]:
    """A merchant that has earned ``earned`` USD from a customer's wallet purchase."""
    shop = payments.create_merchant("Corner Books", "USD", funding_policy=WALLET_ONLY)
    buyer = payments.create_customer("USD", processor_customer_token="c", payment_method_token="p")
    assert payments.top_up(buyer.id, usd("20.00"), "load").status is TopUpStatus.ok
    payments.set_item(shop.id, "atlas", "An atlas", usd(earned))
    assert payments.purchase(shop.id, buyer.id, "atlas", "buy-atlas").ok
    return shop.id, buyer.id


# --- the code format ---------------------------------------------------------


def test_code_format_is_grouped_crockford_with_a_check_symbol() -> None:
    code = gc.format_code(0x1234_5678_9ABC_DEF0_1234)
    groups = code.split("-")
    assert [len(g) for g in groups] == [4, 4, 4, 4, 1]
    assert set(code.replace("-", "")) <= set(gc.ALPHABET)
    assert gc.parse_code(code) == code.replace("-", "")
    # Forgiving input: case, spaces, and the letters Crockford reads as digits.
    assert gc.parse_code(code.lower().replace("-", " ")) == code.replace("-", "")
    zero = gc.format_code(0)
    assert gc.parse_code(zero.replace("0", "O")) == zero.replace("-", "")
    one = gc.format_code(int("00001" * 16, 2))  # every data symbol is 1
    assert gc.parse_code(one[:-1].replace("1", "I").replace("I", "l", 3) + one[-1]) is not None
    assert gc.format_code(2**80 - 1).startswith("ZZZZ-")
    for bad in (-1, 2**80, 1.0, True):
        with pytest.raises(ValueError, match="80-bit"):
            gc.format_code(bad)  # type: ignore[arg-type]
    for bad_text in ("", code[:-2], code + "0", code.replace(code[0], "U", 1), "x" * 65, None):
        assert gc.parse_code(bad_text) is None


@settings(max_examples=40, deadline=None)
@given(st.integers(min_value=0, max_value=2**80 - 1))
def test_every_single_typo_and_adjacent_swap_is_caught(bits: int) -> None:
    symbols = gc.format_code(bits).replace("-", "")
    assert gc.parse_code(symbols) == symbols
    for position in range(17):
        for wrong in gc.ALPHABET:
            if wrong != symbols[position]:
                typo = symbols[:position] + wrong + symbols[position + 1 :]
                assert gc.parse_code(typo) is None, (symbols, position, wrong)
    for position in range(16):
        a, b = symbols[position], symbols[position + 1]
        if a != b:
            swapped = symbols[:position] + b + a + symbols[position + 2 :]
            assert gc.parse_code(swapped) is None, (symbols, position)


# --- worked examples -----------------------------------------------------------


def test_batch_of_100_then_one_card_pays_for_articles(payments, processor, cards) -> None:  # type: ignore[no-untyped-def]
    """The platform issues 100 vouchers of 2.00; Alice redeems one and reads two articles."""
    daily = payments.create_merchant("The Daily Byte", "USD", funding_policy=WALLET_ONLY)
    alice = payments.create_customer("USD")
    payments.set_item(daily.id, "a1", "Article 1", usd("0.25"))
    payments.set_item(daily.id, "a2", "Article 2", usd("0.0004"))

    batch = cards.issue_gift_cards(100, usd("2.00"), "USD", "spring-promo")
    assert batch.status is IssueStatus.ok
    assert len(batch.codes) == len(set(batch.codes)) == 100 == len(batch.card_ids)
    funding = chart.platform_account(Kind.gift_card_funding, "USD")
    assert debit_balance_micros(payments.ledger.accounts([funding])[funding]) == usd("200.00")
    # Only a keyed hash of each code is stored, never the code.
    first = cards.card(batch.card_ids[0])
    assert first is not None
    assert first.value_micros == usd("2.00")
    canonical = batch.codes[0].replace("-", "")
    expected = hmac.new(b"test pepper", canonical.encode(), hashlib.sha256).hexdigest()
    assert first.code_hash == expected
    assert canonical not in first.code_hash
    # The codes are shown once: a retry of the same batch replays it without codes.
    again = cards.issue_gift_cards(100, usd("2.00"), "USD", "spring-promo")
    assert again.replayed
    assert again.batch_id == batch.batch_id
    assert again.codes == ()
    assert again.card_ids == batch.card_ids
    assert cards.issue_gift_cards(99, usd("2.00"), "USD", "spring-promo").status is (
        IssueStatus.idempotency_key_reused
    )

    code = batch.codes[41].lower()  # typed in lower case
    redeemed = cards.redeem(alice.id, code, "redeem-1")
    assert redeemed.status is RedeemStatus.ok
    assert redeemed.amount_micros == usd("2.00")
    assert redeemed.remaining_micros == 0
    assert credit(payments, chart.wallet_account(alice.id, "USD")) == usd("2.00")
    replay = cards.redeem(alice.id, code, "redeem-1")
    assert replay.replayed
    assert replay.transfer_id == redeemed.transfer_id
    assert cards.redeem(alice.id, batch.codes[0], "redeem-1").status is (
        RedeemStatus.idempotency_key_reused
    )
    assert cards.redeem(alice.id, code, "redeem-2").status is RedeemStatus.card_spent

    for ref in ("a1", "a2"):
        receipt = payments.purchase(daily.id, alice.id, ref, f"buy-{ref}")
        assert receipt.status is PurchaseStatus.ok
        assert receipt.funding is FundingSource.wallet
    assert credit(payments, chart.wallet_account(alice.id, "USD")) == usd("1.7496")
    assert credit(payments, chart.payable_account(daily.id, "USD")) == usd("0.2504")
    card_ids = [gc.card_account_id(i, "USD") for i in batch.card_ids]
    liability = sum(credit_balance_micros(a) for a in payments.ledger.accounts(card_ids).values())
    assert liability == usd("198.00")  # 99 unredeemed cards
    balances_are_whole(payments, processor)


def test_a_typo_is_refused_by_the_check_symbol(payments, processor, cards) -> None:  # type: ignore[no-untyped-def]
    """Bob mistypes one character: refused before any lookup, nothing written, no strike."""
    bob = payments.create_customer("USD")
    batch = cards.issue_gift_cards(1, usd("5.00"), "USD", "b1")
    before = ledger_snapshot(payments)
    strict = GiftCards(payments, pepper=b"test pepper", failed_attempts_max=1)
    for position in (0, 9, 16):
        typo = flip(batch.codes[0], position)
        assert strict.redeem(bob.id, typo, f"typo-{position}").status is (
            RedeemStatus.code_malformed
        )
    assert ledger_snapshot(payments) == before
    # Typos are not guesses: the single-strike limit is still untouched.
    assert strict.redeem(bob.id, batch.codes[0], "right").status is RedeemStatus.ok
    balances_are_whole(payments, processor)


def test_till_spends_store_credit_in_two_parts(payments, processor, cards) -> None:  # type: ignore[no-untyped-def]
    """Corner Books gives 5.00 of store credit; its till takes 2.00 then 3.00."""
    shop_id, buyer_id = earning_merchant(payments, "10.00")
    other = payments.create_merchant("Elsewhere", "USD", funding_policy=WALLET_ONLY)
    payable = chart.payable_account(shop_id, "USD")

    batch = cards.issue_store_credit(shop_id, 2, usd("5.00"), "credit-1")
    assert batch.status is IssueStatus.ok
    assert credit(payments, payable) == usd("0.00")  # the merchant funded both cards
    code = batch.codes[0]

    assert cards.redeem_at_pos(other.id, code, usd("1.00"), "t1").status is (
        RedeemStatus.wrong_merchant
    )
    first = cards.redeem_at_pos(shop_id, code, usd("2.00"), "till-1")
    assert first.ok
    assert first.remaining_micros == usd("3.00")
    assert cards.redeem_at_pos(shop_id, code, usd("3.01"), "till-2").status is (
        RedeemStatus.amount_above_remaining
    )
    second = cards.redeem_at_pos(shop_id, code, usd("3.00"), "till-2")
    assert second.ok
    assert second.remaining_micros == 0
    assert cards.redeem_at_pos(shop_id, code, usd("0.01"), "till-3").status is (
        RedeemStatus.card_spent
    )
    assert cards.remaining_micros(first.card_id) == 0
    assert credit(payments, payable) == usd("5.00")  # the spent card came back as a sale

    # The second card goes to a customer's store credit at that merchant only.
    into_account = cards.redeem(buyer_id, batch.codes[1], "mine")
    assert into_account.ok
    assert into_account.credit_account_id == chart.store_credit_account(buyer_id, shop_id, "USD")
    assert credit(payments, into_account.credit_account_id) == usd("5.00")
    assert credit(payments, chart.wallet_account(buyer_id, "USD")) == usd("10.00")  # unchanged
    balances_are_whole(payments, processor)


def test_expired_card_becomes_breakage_once(payments, processor, cards, clock) -> None:  # type: ignore[no-untyped-def]
    """A 10.00 card, 4.00 spent at a till, expires: 6.00 is breakage, booked once."""
    kiosk = payments.create_merchant("Kiosk", "USD", funding_policy=WALLET_ONLY)
    carol = payments.create_customer("USD")
    expires_at_us = clock() + 30 * DAY_S * 1_000_000
    batch = cards.issue_gift_cards(2, usd("10.00"), "USD", "x1", expires_at_us=expires_at_us)
    spend = cards.redeem_at_pos(kiosk.id, batch.codes[0], usd("4.00"), "k1")
    assert spend.ok
    assert spend.remaining_micros == usd("6.00")
    assert cards.redeem(carol.id, batch.codes[1], "c1").ok  # fully moved before expiry

    clock.advance(30 * DAY_S)
    assert cards.redeem(carol.id, batch.codes[0], "late").status is RedeemStatus.card_expired
    assert cards.expire_gift_cards(clock() - 1).expired_cards == 0  # not yet due
    run = cards.expire_gift_cards(clock())
    assert run.expired_cards == 2
    assert run.breakage_micros == {"USD": usd("6.00")}
    assert cards.expire_gift_cards(clock()).expired_cards == 0
    breakage = chart.platform_account(Kind.breakage_income, "USD")
    assert credit(payments, breakage) == usd("6.00")
    assert cards.remaining_micros(spend.card_id) == 0
    assert credit(payments, chart.wallet_account(carol.id, "USD")) == usd("10.00")
    balances_are_whole(payments, processor)


def test_expired_store_credit_returns_to_the_merchant(payments, processor, cards, clock) -> None:  # type: ignore[no-untyped-def]
    shop_id, _ = earning_merchant(payments, "3.00")
    expires_at_us = clock() + DAY_S * 1_000_000
    batch = cards.issue_store_credit(shop_id, 1, usd("3.00"), "sc", expires_at_us=expires_at_us)
    assert cards.redeem_at_pos(shop_id, batch.codes[0], usd("1.00"), "t").ok
    clock.advance(DAY_S)
    assert cards.expire_gift_cards().breakage_micros == {"USD": usd("2.00")}
    assert credit(payments, chart.payable_account(shop_id, "USD")) == usd("3.00")
    assert credit(payments, chart.platform_account(Kind.breakage_income, "USD")) == 0
    balances_are_whole(payments, processor)


def test_guessing_is_rate_limited_across_processes(  # type: ignore[no-untyped-def]
    payments, processor, clock, database_url
) -> None:
    limited = GiftCards(payments, failed_attempts_max=3, attempt_window_s=3_600)
    dave = payments.create_customer("USD")
    erin = payments.create_customer("USD")
    batch = limited.issue_gift_cards(1, usd("1.00"), "USD", "g")
    guesses = [gc.format_code(n) for n in (1, 2, 3)]  # well-formed, never issued
    for n, guess in enumerate(guesses):
        assert limited.redeem(dave.id, guess, f"g{n}").status is RedeemStatus.code_not_found
    before = ledger_snapshot(payments)
    assert limited.redeem(dave.id, batch.codes[0], "real").status is RedeemStatus.too_many_attempts
    # Another process (its own connection) sees the same count.
    other_store = open_store(database_url)
    try:
        elsewhere = GiftCards(Payments(other_store, processor, clock=clock), failed_attempts_max=3)
        assert elsewhere.redeem(dave.id, batch.codes[0], "real").status is (
            RedeemStatus.too_many_attempts
        )
    finally:
        other_store.close()
    assert ledger_snapshot(payments) == before
    assert limited.redeem(erin.id, gc.format_code(4), "e").status is RedeemStatus.code_not_found
    clock.advance(3_600)  # the next window
    assert limited.redeem(dave.id, batch.codes[0], "real").status is RedeemStatus.ok
    balances_are_whole(payments, processor)


def test_refusals_write_nothing(payments, processor, cards, clock) -> None:  # type: ignore[no-untyped-def]
    shop_id, buyer_id = earning_merchant(payments, "1.00")
    eur = payments.create_customer("EUR")
    usd_cards = cards.issue_gift_cards(1, usd("1.00"), "USD", "ok-batch")
    code = usd_cards.codes[0]
    small = GiftCards(payments, batch_max=5)
    assert small.issue_gift_cards(5, 1, "USD", "five").status is IssueStatus.ok
    before = ledger_snapshot(payments)
    now = clock()
    issue_cases = [
        (small.issue_gift_cards(6, 1, "USD", "six"), IssueStatus.count_invalid),
        (cards.issue_gift_cards(0, 1, "USD", "k"), IssueStatus.count_invalid),
        (cards.issue_gift_cards(1, 0, "USD", "k"), IssueStatus.value_invalid),
        (cards.issue_gift_cards(1, 1.5, "USD", "k"), IssueStatus.value_invalid),  # type: ignore[arg-type]
        (
            cards.issue_gift_cards(1, gc.gift_card_value_micros_max + 1, "USD", "k"),
            IssueStatus.value_invalid,
        ),
        (cards.issue_gift_cards(1, 1, "XXX", "k"), IssueStatus.currency_invalid),
        (cards.issue_gift_cards(1, 1, "USD", "k", expires_at_us=now), IssueStatus.expiry_invalid),
        (cards.issue_gift_cards(1, 1, "USD", ""), IssueStatus.idempotency_key_invalid),
        (cards.issue_store_credit(999, 1, 1, "k"), IssueStatus.merchant_not_found),
        (
            cards.issue_store_credit(shop_id, 1, usd("1.000001"), "k"),
            IssueStatus.merchant_funds_insufficient,
        ),
    ]
    for outcome, expected in issue_cases:
        assert outcome.status is expected
        assert outcome.codes == ()
    redeem_cases = [
        (cards.redeem(buyer_id, code, "\n"), RedeemStatus.idempotency_key_invalid),
        (cards.redeem_at_pos(shop_id, code, 0, "k"), RedeemStatus.amount_invalid),
        (cards.redeem_at_pos(shop_id, code, -5, "k"), RedeemStatus.amount_invalid),
        (cards.redeem(buyer_id, "not a code", "k"), RedeemStatus.code_malformed),
        (cards.redeem(999_999, code, "k"), RedeemStatus.customer_not_found),
        (cards.redeem_at_pos(999, code, 1, "k"), RedeemStatus.merchant_not_found),
        (cards.redeem(eur.id, code, "k"), RedeemStatus.currency_mismatch),
        (cards.redeem_at_pos(shop_id, code, usd("1.01"), "k"), RedeemStatus.amount_above_remaining),
    ]
    for outcome, expected in redeem_cases:
        assert outcome.status is expected
        assert not outcome.transfer_id
    assert ledger_snapshot(payments) == before
    balances_are_whole(payments, processor)


# --- concurrency ---------------------------------------------------------------


def _race(
    database_url: str, clock: object, workers: int, act: Callable[[GiftCards, int], object]
) -> list[object]:
    """Run ``act`` on ``workers`` threads, each with its own store connection, released together."""
    stores = [open_store(database_url) for _ in range(workers)]
    try:
        services = [
            GiftCards(Payments(s, SimulatedProcessor(), clock=clock), pepper=b"test pepper")  # type: ignore[arg-type]
            for s in stores
        ]
        barrier = threading.Barrier(workers, timeout=30)
        results: list[object] = [None] * workers

        def run(n: int) -> None:
            barrier.wait()
            results[n] = act(services[n], n)

        threads = [threading.Thread(target=run, args=(n,)) for n in range(workers)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not any(t.is_alive() for t in threads)
        return results
    finally:
        for s in stores:
            s.close()


def test_a_card_cannot_be_spent_twice_concurrently(  # type: ignore[no-untyped-def]
    payments, processor, cards, clock, database_url
) -> None:
    shop = payments.create_merchant("Till", "USD", funding_policy=WALLET_ONLY)
    people = [payments.create_customer("USD") for _ in range(4)]
    rounds = 3
    batch = cards.issue_gift_cards(2 * rounds, usd("1.00"), "USD", "race")
    for r in range(rounds):
        # Full-value redemptions by four customers: exactly one wins.
        code = batch.codes[2 * r]
        outcomes = _race(
            database_url,
            clock,
            4,
            lambda s, n, code=code, r=r: s.redeem(people[n].id, code, f"r{r}-{n}"),
        )
        statuses = sorted(o.status.value for o in outcomes)  # type: ignore[attr-defined]
        assert statuses == ["card_spent", "card_spent", "card_spent", "ok"], statuses
        # Partial spends of 0.40 at the till: two fit in 1.00, never three.
        code = batch.codes[2 * r + 1]
        outcomes = _race(
            database_url,
            clock,
            4,
            lambda s, n, code=code, r=r: s.redeem_at_pos(shop.id, code, usd("0.40"), f"p{r}-{n}"),
        )
        oks = [o for o in outcomes if o.ok]  # type: ignore[attr-defined]
        assert len(oks) == 2
        assert cards.remaining_micros(oks[0].card_id) == usd("0.20")  # type: ignore[attr-defined]
    wallets = sum(credit(payments, chart.wallet_account(p.id, "USD")) for p in people)
    assert wallets == rounds * usd("1.00")
    assert credit(payments, chart.payable_account(shop.id, "USD")) == rounds * usd("0.80")
    balances_are_whole(payments, processor)
