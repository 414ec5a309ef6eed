"""Payouts run by the durable worker, and paid through the Stripe adapter against localstripe.

localstripe (1.15) serves ``/v1/payouts`` (create, retrieve, list, cancel; EUR
only; it ignores the destination) but not ``/v1/transfers``: payouts to a bank
account token work end to end, Transfers to connected accounts (``acct_...``)
can only be tested against Stripe itself.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from micropay.core.money import parse_amount
from micropay.payments.models import FundingSource, TopUpStatus
from micropay.payments.processor import PayoutRequest, PayoutResult
from micropay.payouts.plans import Bucket, Schedule
from micropay.payouts.splits import Share
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.service.payouts import Payouts, PayoutStatus, VerificationStatus, reconcile_payouts
from micropay.service.reconcile import reconcile
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


# --- payouts as worker jobs --------------------------------------------------------------


def test_the_worker_releases_starts_and_pays_payouts_once_per_period(
    payments, payouts, processor, clock
) -> None:  # type: ignore[no-untyped-def]
    from micropay.worker import Registry, Worker, register_payout_jobs

    merchant_id, reader_id = shop(payments, "3.00")
    author = payouts.create_payee(
        "author", "USD", "ba_author", schedule=Schedule.daily, threshold_micros=usd("1.00")
    )
    payouts.set_split(merchant_id, "book", [Share(author.id, 10_000)])
    deposits = verify(payouts, processor, author.id, "ba_author")
    payouts.record_sale(buy(payments, merchant_id, reader_id, "buy-1"))
    registry = Registry()
    register_payout_jobs(registry, lambda: payouts)
    worker = Worker(payments.store, registry, clock=clock)
    assert registry.names() == ["execute_payouts", "release_payout_shares", "run_payouts"]

    assert {o.state for o in worker.tick()} == {"done"}
    assert len(processor.paid) == 2  # held for 7 days: nothing to pay yet
    clock.advance(7 * 86_400)
    processor.time_out_next = 1  # paid, but the answer is lost: the payout stays pending
    assert {o.state for o in worker.tick()} == {"done"}
    assert payouts.balances(author.id)[Bucket.available] == 0  # held for the payout
    assert len(processor.paid) == 3
    clock.advance(60)  # the next minute's execute_payouts asks again, with the same key
    assert [o.name for o in worker.tick()] == ["execute_payouts"]
    assert processor.to["ba_author"][2:] == [300 - deposits // 10_000]
    assert len(processor.paid) == 3
    clock.advance(3_600)
    worker.tick()
    assert len(processor.paid) == 3  # once per daily period
    books_balance(payouts, processor)


# --- payouts through the Stripe adapter against localstripe ---------------------------------


@pytest.fixture(scope="module")
def localstripe_url() -> Iterator[str]:
    from localstripe_server import running_localstripe

    with running_localstripe() as url:
        yield url


class StripePayoutRail(SimulatedProcessor):
    """Simulated card charges; payouts through the real Stripe adapter (localstripe)."""

    def __init__(self, stripe: Any) -> None:
        super().__init__()
        self.stripe = stripe
        self.keys: list[str] = []

    def payout(self, request: PayoutRequest) -> PayoutResult:
        self.keys.append(request.idempotency_key)
        result: PayoutResult = self.stripe.payout(request)
        return result


def test_payouts_through_stripe_against_localstripe(store, clock, localstripe_url) -> None:  # type: ignore[no-untyped-def]
    """Micro-deposits and a payout in EUR as Stripe Payouts; localstripe's books equal ours."""
    import stripe as stripe_sdk

    from localstripe_server import TEST_API_KEY
    from micropay.fees.schedules import FeeSchedule
    from micropay.processors.stripe import StripeProcessor

    adapter = StripeProcessor(TEST_API_KEY, localstripe_url, webhook_secret="whsec_test")
    http_client = stripe_sdk.RequestsClient(timeout=10)
    client = stripe_sdk.StripeClient(
        TEST_API_KEY, base_addresses={"api": localstripe_url}, http_client=http_client
    )
    try:
        rail = StripePayoutRail(adapter)
        card_eur = FeeSchedule("card_standard", "EUR", fee_bps=290, fixed_micros=250_000)
        payments = Payments(store, rail, clock=clock, schedules=[card_eur])
        payouts = Payouts(payments, bind=bind_payouts_sql)
        wallet = (FundingSource.wallet,)
        merchant = payments.create_merchant("Presse", "EUR", funding_policy=wallet)
        payments.set_item(merchant.id, "book", "Un livre", parse_amount("4.00", "EUR"))
        reader = payments.create_customer(
            "EUR", processor_customer_token="c", payment_method_token="p"
        )
        loaded = payments.top_up(reader.id, parse_amount("10.00", "EUR"), "load")
        assert loaded.status is TopUpStatus.ok
        author = payouts.create_payee(
            "auteur", "EUR", "ba_auteur", schedule=Schedule.daily, threshold_micros=10**6
        )
        payouts.set_split(merchant.id, "book", [Share(author.id, 10_000)])

        def ours() -> dict[str, tuple[int, str]]:
            """localstripe's payouts that micropay asked for (its idempotency key in metadata)."""
            listed = client.v1.payouts.list({"limit": 100})
            assert not listed.has_more
            return {
                p.id: (p.amount, p.currency.upper())
                for p in listed.data
                if p.to_dict().get("metadata", {}).get("micropay_idempotency_key") in rail.keys
            }

        assert payouts.start_verification(author.id).status is VerificationStatus.deposits_sent
        deposits = sorted(amount * 10_000 for amount, _ in ours().values())
        assert len(deposits) == 2
        confirmed = payouts.confirm_deposits(author.id, deposits[1], deposits[0])
        assert confirmed.status is VerificationStatus.verified
        receipt = payments.purchase(merchant.id, reader.id, "book", "buy-1")
        payouts.record_sale(receipt.purchase_id)
        clock.advance(7 * 86_400)
        payouts.release_due()
        [paid] = payouts.run_payouts()
        assert paid.status is PayoutStatus.succeeded
        assert paid.amount_micros == parse_amount("4.00", "EUR") - sum(deposits)
        assert payouts.execute(paid.payout_id) == paid  # settled: not asked again
        at_stripe = ours()
        assert len(at_stripe) == 3
        assert reconcile_payouts(store, at_stripe, bind=bind_payouts_sql) == []
        assert reconcile(store).ok
    finally:
        adapter.close()
        http_client.close()  # type: ignore[no-untyped-call]
