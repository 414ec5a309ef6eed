"""End to end: the payment models over the real Stripe adapter against localstripe, both stores.

No mock of Stripe: ``Payments(store, StripeProcessor(api_base=localstripe))``.
Customers and cards are created directly at localstripe, as Stripe.js would in
a browser; micropay only ever holds their tokens. The story, on SQLite and on
PostgreSQL:

- a top-up succeeds and credits the wallet; a declining card's top-up is
  refused (``charge_declined``) with nothing credited;
- a tab fills up and is settled in ONE Stripe charge;
- a "timeout after the charge" (a proxy forwards the request to localstripe,
  then drops the answer) leaves the charge pending; the recovery run, with the
  same idempotency key, completes it: one PaymentIntent at localstripe, one
  credit in the ledger. A second lost answer is completed instead by Stripe's
  signed ``payment_intent.succeeded`` event through ``ProcessorEvents``;
- a dispute on a direct purchase arrives as signed Stripe events (created,
  then closed ``lost``): the merchant gives the money back, the platform books
  the dispute fee, access is revoked; a tampered event is rejected;
- finally localstripe's succeeded PaymentIntents, listed through the SDK, equal
  the ledger's credits charge by charge, and the ledger reconciles.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import stripe

from localstripe_server import TEST_API_KEY, running_localstripe
from micropay.core.accounts import credit_balance_micros, debit_balance_micros
from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments.chart import Kind
from micropay.payments.models import FundingSource, PurchaseStatus, TopUpStatus
from micropay.processors.stripe import StripeProcessor
from micropay.service.payments import Payments
from micropay.service.processor_events import EventEffect, EventStatus, ProcessorEvents
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from test_stripe_adapter import (
    CARD_DECLINED_ON_CHARGE,
    WEBHOOK_SECRET,
    FaultProxy,
    saved_card,
    sign,
)

TAB_FIRST = (FundingSource.wallet, FundingSource.tab)
DISPUTE_FEE = 15_000_000


def usd(text: str) -> int:
    return parse_amount(text, "USD")


@pytest.fixture(scope="module")
def stripe_url() -> Iterator[str]:
    with running_localstripe() as url:
        yield url


@pytest.fixture(scope="module")
def browser(stripe_url: str) -> Iterator[stripe.StripeClient]:
    """Stands for Stripe.js: creates customers and cards directly at localstripe."""
    http_client = stripe.RequestsClient(timeout=10)
    yield stripe.StripeClient(
        TEST_API_KEY, base_addresses={"api": stripe_url}, http_client=http_client
    )
    http_client.close()  # type: ignore[no-untyped-call]


@pytest.fixture
def make_stripe(stripe_url: str) -> Iterator[Callable[..., StripeProcessor]]:
    made: list[StripeProcessor] = []
    proxies: list[FaultProxy] = []

    def make(mode: str = "") -> StripeProcessor:
        base = stripe_url
        if mode:
            proxy = FaultProxy(stripe_url, mode)
            proxies.append(proxy)
            base = proxy.url
        processor = StripeProcessor(
            TEST_API_KEY, base, webhook_secret=WEBHOOK_SECRET, timeout_s=1.0 if mode else 5.0
        )
        made.append(processor)
        return processor

    yield make
    for processor in made:
        processor.close()
    for proxy in proxies:
        proxy.close()


class Story:
    """The parties of one run, and the Stripe customers it created (to filter localstripe)."""

    def __init__(self, payments: Payments, browser: stripe.StripeClient) -> None:
        self.payments = payments
        self.browser = browser
        self.stripe_customers: set[str] = set()

    def customer(self, card: str = "4242424242424242") -> Any:
        stripe_customer, method = saved_card(self.browser, card)
        self.stripe_customers.add(stripe_customer)
        return self.payments.create_customer(
            "USD", processor_customer_token=stripe_customer, payment_method_token=method
        )

    def intents(self, status: str = "succeeded") -> list[Any]:
        listed = self.browser.v1.payment_intents.list({"limit": 100})
        assert not listed.has_more, "more PaymentIntents than one page"
        return [
            i for i in listed.data if i.customer in self.stripe_customers and i.status == status
        ]

    def balance(self, account_id: int) -> int:
        return credit_balance_micros(self.payments.ledger.accounts([account_id])[account_id])

    def processor_charge(self, charge_id: int) -> str:
        charge = self.payments.charges.tx(lambda tx: tx.get_charge(charge_id))
        return str(charge.processor_charge_id)


def stripe_event(event_type: str, obj: dict[str, Any], created_s: int) -> bytes:
    event = {
        "id": f"evt_{uuid.uuid4().hex[:16]}",
        "object": "event",
        "type": event_type,
        "created": created_s,
        "livemode": False,
        "data": {"object": obj},
    }
    return json.dumps(event).encode()


def test_payments_over_stripe_end_to_end(  # type: ignore[no-untyped-def]
    store, clock, browser, make_stripe
) -> None:
    payments = Payments(store, make_stripe(), clock=clock)
    story = Story(payments, browser)
    events = ProcessorEvents(payments)
    now_s = clock.now_us // 1_000_000

    # 1. A top-up succeeds and credits the wallet, once.
    alice = story.customer()
    topup = payments.top_up(alice.id, usd("10.00"), "alice-topup-1")
    assert topup.status is TopUpStatus.ok
    assert story.balance(chart.wallet_account(alice.id, "USD")) == usd("10.00")
    assert [i.amount for i in story.intents()] == [1000]

    # 2. A declining card: refused, nothing credited, nothing succeeded at Stripe.
    dave = story.customer(CARD_DECLINED_ON_CHARGE)
    declined = payments.top_up(dave.id, usd("10.00"), "dave-topup-1")
    assert declined.status is TopUpStatus.charge_declined
    assert story.balance(chart.wallet_account(dave.id, "USD")) == 0
    assert len(story.intents()) == 1

    # 3. A tab fills up and is settled in one Stripe charge (0.99; 0.0099 stays owed).
    shop = payments.create_merchant("Long Reads", "USD", funding_policy=TAB_FIRST)
    bob = story.customer()
    for n in range(4):
        payments.set_item(shop.id, f"story-{n}", "Story", usd("0.3333"))
    receipts = [payments.purchase(shop.id, bob.id, f"story-{n}", f"bob-{n}") for n in range(4)]
    assert [(r.status, r.funding) for r in receipts] == [(PurchaseStatus.ok, FundingSource.tab)] * 4
    bob_intents = [i for i in story.intents() if i.customer == bob.processor_customer_token]
    assert [i.amount for i in bob_intents] == [99]

    # 4. The answer to a top-up is lost after Stripe charged: pending, then recovered.
    hank = story.customer()
    lossy = Payments(store, make_stripe("reset"), clock=clock)
    lost = lossy.top_up(hank.id, usd("25.00"), "hank-topup-1")
    assert lost.status is TopUpStatus.charge_pending
    hank_wallet = chart.wallet_account(hank.id, "USD")
    assert story.balance(hank_wallet) == 0
    [charged] = [i for i in story.intents() if i.customer == hank.processor_customer_token]
    clock.advance(120)
    recovered = payments.charges.run_due()  # same idempotency key: Stripe replays
    assert [o.status.value for o in recovered] == ["succeeded"]
    assert story.processor_charge(lost.charge_id) == charged.id
    assert [i.id for i in story.intents() if i.customer == hank.processor_customer_token] == [
        charged.id
    ]
    assert story.balance(hank_wallet) == usd("25.00")  # credited once
    assert payments.charges.run_due() == []

    # 5. Another lost answer, completed by Stripe's signed payment_intent.succeeded event.
    ivy = story.customer()
    lost_again = lossy.top_up(ivy.id, usd("15.00"), "ivy-topup-1")
    assert lost_again.status is TopUpStatus.charge_pending
    [intent] = [i for i in story.intents() if i.customer == ivy.processor_customer_token]
    payload = stripe_event("payment_intent.succeeded", intent.to_dict(), now_s)
    header = sign(payload, now_s)
    completed = events.handle(payload, header, now_s)
    duplicate = events.handle(payload, header, now_s)
    assert (completed.status, completed.effect) == (
        EventStatus.applied,
        EventEffect.charge_completed,
    )
    assert (duplicate.effect, duplicate.replayed) == (EventEffect.charge_completed, True)
    assert story.balance(chart.wallet_account(ivy.id, "USD")) == usd("15.00")

    # 6. A dispute on a direct purchase, as signed Stripe events.
    books = payments.create_merchant("E-books", "USD", funding_policy=(FundingSource.direct,))
    payments.set_item(books.id, "textbook", "Textbook", usd("20.00"))
    erin = story.customer()
    bought = payments.purchase(books.id, erin.id, "textbook", "erin-1")
    assert (bought.status, bought.funding) == (PurchaseStatus.ok, FundingSource.direct)
    purchase = payments.charges.tx(lambda tx: tx.get_purchase(bought.purchase_id))
    payment_intent = story.processor_charge(purchase.charge_id)
    payable = chart.payable_account(books.id, "USD")
    assert story.balance(payable) == usd("20.00")
    dispute = {
        "id": "dp_e2e_1",
        "object": "dispute",
        "amount": 2000,
        "currency": "usd",
        "charge": "ch_e2e",
        "payment_intent": payment_intent,
        "reason": "fraudulent",
        "status": "needs_response",
    }
    created = stripe_event("charge.dispute.created", dispute, now_s)
    tampered = created.replace(b'"amount": 2000', b'"amount": 200')
    rejected = events.handle(tampered, sign(created, now_s), now_s)
    assert rejected.status is EventStatus.rejected
    assert story.balance(payable) == usd("20.00")
    opened = events.handle(created, sign(created, now_s), now_s)
    assert (opened.status, opened.effect) == (EventStatus.applied, EventEffect.dispute_opened)
    closed = stripe_event("charge.dispute.closed", {**dispute, "status": "lost"}, now_s + 60)
    lost_dispute = events.handle(closed, sign(closed, now_s + 60), now_s + 60)
    assert lost_dispute.effect is EventEffect.dispute_lost
    assert story.balance(payable) == 0
    losses = chart.platform_account(Kind.dispute_losses, "USD")
    assert debit_balance_micros(payments.ledger.accounts([losses])[losses]) == DISPUTE_FEE
    assert not payments.has_access(books.id, erin.id, "textbook")

    # 7. Stripe's books against ours, charge by charge; the ledger reconciles.
    succeeded = {i.id: (i.amount, i.currency.upper()) for i in story.intents()}
    assert sorted(amount for amount, _ in succeeded.values()) == [99, 1000, 1500, 2000, 2500]
    assert reconcile_processor(store, succeeded) == []
    report = reconcile(store)
    assert report.ok, report.violations
    # The oracle has teeth: a PaymentIntent we never credited is reported.
    phantom = {**succeeded, "pi_never_credited": (100, "USD")}
    assert len(reconcile_processor(store, phantom)) == 1
