"""Worked examples of the payment models, as accounting stories, on both stores.

Each story ends with the two oracles: the ledger reconciles, and the
processor's own books equal the charges credited in the ledger.
"""

from __future__ import annotations

import threading

import jwt
import pytest

from micropay.core.accounts import available_micros, credit_balance_micros, debit_balance_micros
from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments.chart import Kind
from micropay.payments.models import FundingSource, PurchaseStatus, TabState, TopUpStatus
from micropay.payments.tokens import verify_entitlement
from micropay.processors.simulated import DECLINING_PAYMENT_METHOD, Faults, SimulatedProcessor
from micropay.service.payments import Payments, PaymentsInputError
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.service.refunds import RefundStatus
from micropay.store import open_store

WALLET_ONLY = (FundingSource.wallet,)
TAB_FIRST = (FundingSource.wallet, FundingSource.tab)


def usd(text: str) -> int:
    return parse_amount(text, "USD")


@pytest.fixture
def processor() -> SimulatedProcessor:
    return SimulatedProcessor()


@pytest.fixture
def payments(store, processor, clock) -> Payments:  # type: ignore[no-untyped-def]
    return Payments(store, processor, clock=clock)


def balances_are_whole(payments: Payments, processor: SimulatedProcessor) -> None:
    report = reconcile(payments.store)
    assert report.ok, report.violations
    problems = reconcile_processor(payments.store, processor.succeeded_charges())
    assert problems == []


def account(payments: Payments, account_id: int):  # type: ignore[no-untyped-def]
    return payments.ledger.accounts([account_id])[account_id]


def test_reader_tops_up_five_dollars_and_buys_three_articles(payments, processor) -> None:  # type: ignore[no-untyped-def]
    """Alice loads 5.00 USD once (one card charge) and reads three articles from it."""
    daily = payments.create_merchant("The Daily Byte", "USD", funding_policy=WALLET_ONLY)
    alice = payments.create_customer(
        "USD", processor_customer_token="cus_a", payment_method_token="pm_a"
    )
    for ref, price in (("a1", "0.10"), ("a2", "0.25"), ("a3", "0.0004")):
        payments.set_item(daily.id, ref, f"Article {ref}", usd(price))

    topup = payments.top_up(alice.id, usd("5.00"), "topup-1")
    assert topup.status is TopUpStatus.ok
    receipts = [
        payments.purchase(daily.id, alice.id, ref, f"buy-{ref}") for ref in ("a1", "a2", "a3")
    ]
    assert [r.status for r in receipts] == [PurchaseStatus.ok] * 3
    assert {r.funding for r in receipts} == {FundingSource.wallet}

    wallet = account(payments, chart.wallet_account(alice.id, "USD"))
    assert available_micros(wallet) == usd("5.00") - usd("0.3504")  # 4.6496 exactly
    merchant = account(payments, chart.payable_account(daily.id, "USD"))
    assert credit_balance_micros(merchant) == usd("0.3504")
    # One card charge for the whole top-up: 5% + 0.05 (micropayment rate) = 0.30.
    fees = account(payments, chart.platform_account(Kind.processor_fees, "USD"))
    assert debit_balance_micros(fees) == usd("0.30")
    assert len(processor.succeeded_charges()) == 1
    assert payments.has_access(daily.id, alice.id, "a2")
    balances_are_whole(payments, processor)


def test_tab_reaches_its_limit_and_is_charged_once(payments, processor) -> None:  # type: ignore[no-untyped-def]
    """Bob has no wallet money; his 1.00 USD tab fills up and is settled in one charge."""
    shop = payments.create_merchant("Long Reads", "USD", funding_policy=TAB_FIRST)
    bob = payments.create_customer(
        "USD", processor_customer_token="cus_b", payment_method_token="pm_b"
    )
    for n in range(4):
        payments.set_item(shop.id, f"story-{n}", "Story", usd("0.3333"))
    first = [payments.purchase(shop.id, bob.id, f"story-{n}", f"k{n}") for n in range(3)]
    assert [r.funding for r in first] == [FundingSource.tab] * 3
    assert processor.succeeded_charges() == {}  # nothing charged yet: 0.9999 owed

    fourth = payments.purchase(shop.id, bob.id, "story-3", "k3")
    assert (fourth.status, fourth.funding) == (PurchaseStatus.ok, FundingSource.tab)
    # One charge of 0.99: the 0.0099 sub-cent remainder stays on the tab.
    assert list(processor.succeeded_charges().values()) == [(99, "USD")]
    tab = account(payments, chart.tab_account(bob.id, "USD"))
    assert debit_balance_micros(tab) == usd("0.0099") + usd("0.3333")
    # Paid on time: the trust ladder raises the limit from 1.00 to 2.00.
    assert tab.credit_limit_micros == usd("2.00")
    balances_are_whole(payments, processor)


def test_tab_below_the_minimum_carries_over_at_period_end(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    shop = payments.create_merchant("Chart Music", "USD", funding_policy=TAB_FIRST)
    carol = payments.create_customer(
        "USD", processor_customer_token="cus_c", payment_method_token="pm_c"
    )
    payments.set_item(shop.id, "song", "Song", usd("0.30"))
    assert payments.purchase(shop.id, carol.id, "song", "k1").funding is FundingSource.tab

    clock.advance(payments.tab_policy.period_s)
    assert payments.charges.close_tab_periods() == []  # 0.30 < 0.50: carried over
    assert processor.succeeded_charges() == {}
    clock.advance(payments.tab_policy.carry_max_age_s)
    outcomes = payments.charges.close_tab_periods()  # too old: charged anyway
    assert [o.status.value for o in outcomes] == ["succeeded"]
    assert list(processor.succeeded_charges().values()) == [(30, "USD")]
    balances_are_whole(payments, processor)


def test_declined_tab_enters_dunning_and_freezes(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    shop = payments.create_merchant("Long Reads", "USD", funding_policy=TAB_FIRST)
    dave = payments.create_customer(
        "USD", processor_customer_token="cus_d", payment_method_token=DECLINING_PAYMENT_METHOD
    )
    payments.set_item(shop.id, "big", "Long read", usd("0.60"))
    payments.set_item(shop.id, "more", "Another", usd("0.60"))
    assert payments.purchase(shop.id, dave.id, "big", "k1").funding is FundingSource.tab
    refused = payments.purchase(shop.id, dave.id, "more", "k2")  # tab full; settling fails
    assert refused.status is PurchaseStatus.tab_frozen
    customer = payments.charges.tx(lambda tx: tx.get_customer(dave.id))
    assert customer.tab_state is TabState.frozen
    # Dunning: the charge waits with back-off, and a retry before it is due does nothing.
    assert payments.charges.run_due() == []
    clock.advance(payments.tab_policy.dunning_backoff_s[0])
    retried = payments.charges.run_due()
    assert [o.status.value for o in retried] == ["pending"]  # declined again, rescheduled
    assert processor.succeeded_charges() == {}
    tab = account(payments, chart.tab_account(dave.id, "USD"))
    assert debit_balance_micros(tab) == usd("0.60")  # still owed, nothing lost
    balances_are_whole(payments, processor)
    # A frozen tab waits for its charge, not for its period: it leaves the due set,
    # so frozen tabs can never fill the period-end job's pages.
    clock.advance(payments.tab_policy.period_s)
    now = clock.now_us
    due = payments.charges.tx(lambda tx: tx.customers_with_tab_period_ended(now, 100))
    assert dave.id not in due


def test_direct_purchase_shows_the_fee_and_the_guard_names_cheaper_models(
    payments, processor
) -> None:  # type: ignore[no-untyped-def]
    store = payments.create_merchant(
        "E-books", "USD", funding_policy=(FundingSource.direct,), fee_guard_max_bps=1_000
    )
    erin = payments.create_customer(
        "USD", processor_customer_token="cus_e", payment_method_token="pm_e"
    )
    payments.set_item(store.id, "article", "Article", usd("0.10"))
    payments.set_item(store.id, "book", "Textbook", usd("20.00"))
    refused = payments.purchase(store.id, erin.id, "article", "k1")
    assert refused.status is PurchaseStatus.fee_guard_refused
    assert "prepaid wallet" in refused.message
    assert "%" in refused.message
    bought = payments.purchase(store.id, erin.id, "book", "k2")
    assert (bought.status, bought.funding) == (PurchaseStatus.ok, FundingSource.direct)
    assert bought.fee_micros == usd("0.88")  # 2.9% + 0.30: the card rate is cheaper at 20 USD
    assert payments.has_access(store.id, erin.id, "book")
    balances_are_whole(payments, processor)


def test_a_purchase_is_never_charged_twice(payments, processor) -> None:  # type: ignore[no-untyped-def]
    daily = payments.create_merchant("The Daily Byte", "USD", funding_policy=WALLET_ONLY)
    frank = payments.create_customer(
        "USD", processor_customer_token="cus_f", payment_method_token="pm_f"
    )
    payments.set_item(daily.id, "a1", "Article", usd("0.10"))
    payments.set_item(daily.id, "a2", "Article 2", usd("0.10"))
    payments.top_up(frank.id, usd("5.00"), "t1")
    first = payments.purchase(daily.id, frank.id, "a1", "key-1")
    again = payments.purchase(daily.id, frank.id, "a1", "key-1")
    assert (again.purchase_id, again.replayed) == (first.purchase_id, True)
    other_key = payments.purchase(daily.id, frank.id, "a1", "key-2")
    assert other_key.status is PurchaseStatus.already_entitled
    assert other_key.purchase_id == first.purchase_id
    reused = payments.purchase(daily.id, frank.id, "a2", "key-1")
    assert reused.status is PurchaseStatus.idempotency_key_reused
    wallet = account(payments, chart.wallet_account(frank.id, "USD"))
    assert available_micros(wallet) == usd("4.90")  # one article paid, once
    balances_are_whole(payments, processor)


def test_refund_races_another_refund(payments, processor, database_url, clock) -> None:  # type: ignore[no-untyped-def]
    daily = payments.create_merchant("The Daily Byte", "USD", funding_policy=WALLET_ONLY)
    gina = payments.create_customer(
        "USD", processor_customer_token="cus_g", payment_method_token="pm_g"
    )
    payments.set_item(daily.id, "a1", "Article", usd("0.10"))
    payments.top_up(gina.id, usd("5.00"), "t1")
    purchase = payments.purchase(daily.id, gina.id, "a1", "k1")
    results = []
    barrier = threading.Barrier(4)

    def refund(n: int) -> None:
        own = Payments(open_store(database_url), processor, clock=clock)
        barrier.wait()
        results.append(own.refunds.refund(purchase.purchase_id, usd("0.06"), f"r{n}"))
        own.store.close()

    threads = [threading.Thread(target=refund, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    statuses = sorted(r.status.value for r in results)
    assert statuses == ["exceeds_refundable"] * 3 + ["ok"]
    wallet = account(payments, chart.wallet_account(gina.id, "USD"))
    assert available_micros(wallet) == usd("4.96")
    rest = payments.refunds.refund(purchase.purchase_id, usd("0.04"), "r-rest")
    assert rest.status is RefundStatus.ok
    assert not payments.has_access(daily.id, gina.id, "a1")  # fully refunded: access revoked
    balances_are_whole(payments, processor)


def test_top_up_that_timed_out_after_the_charge_is_credited_once(store, clock) -> None:  # type: ignore[no-untyped-def]
    processor = SimulatedProcessor(Faults(timeout_after_charge=1.0))
    payments = Payments(store, processor, clock=clock)
    hank = payments.create_customer(
        "USD", processor_customer_token="cus_h", payment_method_token="pm_h"
    )
    receipt = payments.top_up(hank.id, usd("10.00"), "t1")
    assert receipt.status is TopUpStatus.charge_pending  # the processor charged, we never heard
    assert len(processor.succeeded_charges()) == 1
    wallet_id = chart.wallet_account(hank.id, "USD")
    assert available_micros(account(payments, wallet_id)) == 0
    clock.advance(120)
    processor.faults.timeout_after_charge = 0.0
    outcomes = payments.charges.run_due()  # the same idempotency key: the first result
    assert [o.status.value for o in outcomes] == ["succeeded"]
    assert len(processor.succeeded_charges()) == 1  # no double charge
    assert available_micros(account(payments, wallet_id)) == usd("10.00")
    balances_are_whole(payments, processor)


def test_entitlement_token_verifies_offline(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    daily = payments.create_merchant("The Daily Byte", "USD", funding_policy=WALLET_ONLY)
    ida = payments.create_customer(
        "USD", processor_customer_token="cus_i", payment_method_token="pm_i"
    )
    payments.set_item(daily.id, "day-pass", "Day pass", usd("0.50"), access_period_s=86_400)
    payments.top_up(ida.id, usd("5.00"), "t1")
    assert payments.purchase(daily.id, ida.id, "day-pass", "k1").ok
    token = payments.entitlement_token(daily.id, ida.id, "day-pass")
    assert token is not None
    public_pem = payments.signer.public_key_pem()
    now_s = clock.now_us // 1_000_000
    claims = verify_entitlement(token, public_pem, daily.public_id, now_s)
    assert (claims.customer, claims.item_ref) == (ida.public_id, "day-pass")
    with pytest.raises(jwt.InvalidTokenError):
        verify_entitlement(token, public_pem, "mer_someone_else", now_s)
    with pytest.raises(jwt.InvalidTokenError):
        verify_entitlement(token, public_pem, daily.public_id, now_s + 86_400)  # expired
    with pytest.raises(jwt.InvalidTokenError):
        verify_entitlement(token[:-4] + "AAAA", public_pem, daily.public_id, now_s)
    clock.advance(86_400)
    assert not payments.has_access(daily.id, ida.id, "day-pass")


@pytest.mark.parametrize(
    ("case", "expected"),
    [
        ("unknown_merchant", PurchaseStatus.merchant_not_found),
        ("unknown_customer", PurchaseStatus.customer_not_found),
        ("unknown_item", PurchaseStatus.item_not_found),
        ("zero_price", PurchaseStatus.price_invalid),
        ("negative_price", PurchaseStatus.price_invalid),
        ("float_price", PurchaseStatus.price_invalid),
        ("changed_price", PurchaseStatus.price_invalid),
        ("foreign_currency", PurchaseStatus.currency_not_sold),
        ("empty_key", PurchaseStatus.idempotency_key_invalid),
        ("no_funds", PurchaseStatus.insufficient_funds),
    ],
)
def test_bad_purchases_name_the_reason_and_write_nothing(
    payments, processor, case, expected
) -> None:  # type: ignore[no-untyped-def]
    daily = payments.create_merchant("The Daily Byte", "USD", funding_policy=WALLET_ONLY)
    jo = payments.create_customer(
        "USD", processor_customer_token="cus_j", payment_method_token="pm_j"
    )
    payments.set_item(daily.id, "a1", "Article", usd("0.10"))
    args = {"merchant_id": daily.id, "customer_id": jo.id, "item_ref": "a1", "idempotency_key": "k"}
    if case != "no_funds":
        payments.top_up(jo.id, usd("5.00"), "t1")
    overrides = {
        "unknown_merchant": {"merchant_id": 999_999},
        "unknown_customer": {"customer_id": 999_999},
        "unknown_item": {"item_ref": "nope"},
        "zero_price": {"price_micros": 0},
        "negative_price": {"price_micros": -100_000},
        "float_price": {"price_micros": 0.1},
        "changed_price": {"price_micros": usd("0.05")},
        "foreign_currency": {"currency": "EUR"},
        "empty_key": {"idempotency_key": ""},
    }.get(case, {})
    before = payments.ledger.accounts([chart.wallet_account(jo.id, "USD")])
    receipt = payments.purchase(**{**args, **overrides})  # type: ignore[arg-type]
    assert receipt.status is expected
    assert receipt.purchase_id == 0
    assert payments.ledger.accounts([chart.wallet_account(jo.id, "USD")]) == before
    assert not payments.has_access(daily.id, jo.id, "a1")
    balances_are_whole(payments, processor)


@pytest.mark.parametrize("price", [0, -1, 0.5, 10_000 * 1_000_000 + 1])
def test_bad_catalogue_prices_are_refused(payments, price) -> None:  # type: ignore[no-untyped-def]
    daily = payments.create_merchant("The Daily Byte", "USD")
    with pytest.raises(PaymentsInputError):
        payments.set_item(daily.id, "a1", "Article", price)
    with pytest.raises(PaymentsInputError):
        payments.create_merchant("X", "XXX")


def test_auto_reload_tops_up_below_the_threshold(payments, processor, clock) -> None:  # type: ignore[no-untyped-def]
    """Kim's wallet reloads 10.00 whenever it drops below 2.00: one charge per reload."""
    api = payments.create_merchant("Weather API", "USD", funding_policy=WALLET_ONLY)
    kim = payments.create_customer(
        "USD", processor_customer_token="cus_k", payment_method_token="pm_k"
    )
    payments.set_item(api.id, "forecast", "Forecast", usd("0.75"), access_period_s=60)
    payments.set_auto_reload(kim.id, usd("2.00"), usd("10.00"))
    # An empty wallet: the first purchase reloads first, then pays from the wallet.
    first = payments.purchase(api.id, kim.id, "forecast", "k0")
    assert (first.status, first.funding) == (PurchaseStatus.ok, FundingSource.wallet)
    assert len(processor.succeeded_charges()) == 1
    wallet_id = chart.wallet_account(kim.id, "USD")
    assert available_micros(account(payments, wallet_id)) == usd("9.25")
    # Ten more purchases (each after the last one's minute of access): the wallet
    # falls to 1.75 after the tenth, below 2.00, so it reloads once more.
    for n in range(1, 11):
        clock.advance(61)
        assert payments.purchase(api.id, kim.id, "forecast", f"k{n}").ok
    assert len(processor.succeeded_charges()) == 2
    assert available_micros(account(payments, wallet_id)) == usd("20.00") - usd("0.75") * 11
    with pytest.raises(PaymentsInputError):
        payments.set_auto_reload(kim.id, usd("2.00"), usd("0.001"))  # below the top-up minimum
    balances_are_whole(payments, processor)


def test_store_credit_is_spent_first_at_its_merchant_only(payments, processor) -> None:  # type: ignore[no-untyped-def]
    """Liam redeems store credit from the Daily Byte: it pays there first, never elsewhere."""
    from micropay.service.gift_cards import GiftCards

    daily = payments.create_merchant("The Daily Byte", "USD", funding_policy=WALLET_ONLY)
    other = payments.create_merchant("Long Reads", "USD", funding_policy=WALLET_ONLY)
    liam = payments.create_customer(
        "USD", processor_customer_token="cus_l", payment_method_token="pm_l"
    )
    for merchant in (daily, other):
        payments.set_item(merchant.id, "a1", "Article", usd("0.60"))
        payments.set_item(merchant.id, "a2", "Article 2", usd("0.60"))
    payments.top_up(liam.id, usd("5.00"), "t1")
    assert payments.purchase(daily.id, liam.id, "a1", "earn").ok  # the merchant earns 0.60
    cards = GiftCards(payments)
    batch = cards.issue_store_credit(daily.id, 1, usd("0.50"), "credit-1")
    assert cards.redeem(liam.id, batch.codes[0], "r1").status.value == "ok"
    # 0.50 of credit cannot cover 0.60: the wallet pays, the credit stays.
    assert payments.purchase(daily.id, liam.id, "a2", "k2").funding is FundingSource.wallet
    payments.set_item(daily.id, "a3", "Brief", usd("0.40"))
    brief = payments.purchase(daily.id, liam.id, "a3", "k3")
    assert brief.funding is FundingSource.store_credit
    elsewhere = payments.purchase(other.id, liam.id, "a1", "k4")
    assert elsewhere.funding is FundingSource.wallet  # store credit never pays a foreign merchant
    credit_id = chart.store_credit_account(liam.id, daily.id, "USD")
    assert available_micros(account(payments, credit_id)) == usd("0.10")
    refund = payments.refunds.refund(brief.purchase_id, usd("0.40"), "r-brief")
    assert refund.destination == "store_credit"  # money goes back the way it came
    assert available_micros(account(payments, credit_id)) == usd("0.50")
    balances_are_whole(payments, processor)
