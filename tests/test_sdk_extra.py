"""The SDK's methods for webhooks, events, tabs, subscriptions, usage, payment methods and
gift cards, against the real app in process (the harness of test_sdk), sync and async."""

from __future__ import annotations

from collections.abc import Iterator

import anyio
import pytest

from conftest import FakeClock
from micropay.client import (
    ConflictError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
)
from micropay.processors.simulated import DECLINING_PAYMENT_METHOD
from test_sdk import Harness, _harness


@pytest.fixture
def h(database_url: str, clock: FakeClock) -> Iterator[Harness]:
    yield from _harness(database_url, clock)


def test_sync_client_reaches_every_new_endpoint(h: Harness, clock: FakeClock) -> None:
    token = h.merchant()
    with h.client(token) as mp:
        made = mp.create_webhook_endpoint("https://93.184.216.34/in", idempotency_key="w1")
        assert made.secret is not None
        assert made.secret not in repr(made)
        again = mp.create_webhook_endpoint("https://93.184.216.34/in", idempotency_key="w1")
        assert again.secret is None
        endpoint = made.endpoint.id
        assert [e.id for e in mp.list_webhook_endpoints()] == [endpoint]
        assert mp.disable_webhook_endpoint(endpoint).enabled is False
        assert mp.enable_webhook_endpoint(endpoint).enabled is True
        rotated = mp.rotate_webhook_secret(endpoint)
        assert rotated.secret not in (None, made.secret)

        reader = mp.create_customer(payment_method_token="pm_card_ok")
        mp.put_item("a", "A", 250_000)
        mp.purchase(reader.id, "a")  # on the tab: the wallet is empty
        clock.advance(1)  # events are listed by time, then id
        assert mp.get_tab(reader.id).owed_micros == 250_000
        settled = mp.settle_tab(reader.id)
        assert (settled.status, settled.amount_micros, settled.tab.owed_micros) == (
            "succeeded",
            250_000,
            0,
        )
        clock.advance(1)
        mp.top_up(reader.id, 10_000_000)
        events = list(mp.list_events(page_size=1))
        assert [e.type for e in events] == ["purchase.succeeded", "tab.settled", "topup.succeeded"]
        assert mp.get_event(events[0].id) == events[0]
        assert [e.id for e in mp.list_events(event_type="topup.succeeded")] == [events[2].id]
        deliveries = list(mp.list_webhook_deliveries(endpoint, page_size=2))
        assert len(deliveries) == 3
        assert all(d.state == "pending" for d in deliveries)
        with pytest.raises(ConflictError):
            mp.replay_webhook_delivery(endpoint, deliveries[0].id)  # still pending

        assert mp.put_plan("pro", "Pro", "monthly", 1_000_000).currency == "USD"
        assert mp.get_plan("pro").price_micros == 1_000_000
        sub = mp.subscribe(reader.id, "pro", idempotency_key="s1")
        assert (sub.state, sub.funding) == ("active", "wallet")
        assert mp.get_subscription(sub.id).plan == "pro"
        assert mp.cancel_subscription(sub.id, at_period_end=False).state == "cancelled"

        assert mp.put_meter("calls", 100).unit_price_micros == 100
        assert mp.get_meter("calls").currency == "USD"
        used = mp.record_usage(reader.id, "calls", 7, idempotency_key="u1")
        replay = mp.record_usage(reader.id, "calls", 7, idempotency_key="u1")
        assert (used.amount_micros, used.replayed, replay.replayed) == (700, False, True)
        assert [u.id for u in mp.list_usage(customer=reader.id)] == [used.id]

        assert mp.detach_payment_method(reader.id).has_payment_method is False
        with pytest.raises(PaymentRequiredError):
            mp.top_up(reader.id, 5_000_000)
        card = mp.attach_payment_method(reader.id, DECLINING_PAYMENT_METHOD)
        assert card.has_payment_method is True

        mp.delete_webhook_endpoint(endpoint)
        with pytest.raises(NotFoundError):
            mp.get_webhook_endpoint(endpoint)

    with h.client(h.operator_key) as operator:
        batch = operator.issue_gift_cards(1, 2_000_000, "USD", idempotency_key="g1")
        assert len(batch.codes) == 1
        assert batch.codes[0] not in repr(batch)
        assert operator.issue_gift_cards(1, 2_000_000, "USD", idempotency_key="g1").codes == ()
    with h.client(token) as mp:
        redeemed = mp.redeem_gift_card(reader.id, batch.codes[0])
        assert (redeemed.amount_micros, redeemed.destination) == (2_000_000, "wallet")
    assert h.reconciled()


def test_async_client_reaches_the_new_endpoints(h: Harness) -> None:
    token = h.merchant()

    async def main() -> tuple[str, int, str]:
        async with h.async_client(token) as mp:
            reader = await mp.create_customer(payment_method_token="pm_card_ok")
            await mp.put_meter("calls", 10)
            await mp.record_usage(reader.id, "calls", 3)
            usage = [u async for u in mp.list_usage(page_size=1)]
            tab = await mp.get_tab(reader.id)
            made = await mp.create_webhook_endpoint("https://93.184.216.34/in")
            await mp.delete_webhook_endpoint(made.endpoint.id)
            return tab.state, usage[0].amount_micros, made.endpoint.mode

    assert anyio.run(main) == ("open", 30, "test")


def test_sdk_payees_splits_balances_and_payouts(h: Harness) -> None:
    token = h.merchant()
    with h.client(h.operator_key) as operator:
        ann = operator.create_payee("Ann", "USD", "ba_ann", schedule="manual", idempotency_key="p")
        same = operator.create_payee("Ann", "USD", "ba_ann", schedule="manual", idempotency_key="p")
        assert same == ann
        with pytest.raises(ConflictError):  # the same key for another request
            operator.create_payee("Ann", "USD", "ba_ann", idempotency_key="p")
        assert operator.get_payee(ann.id) == ann
        assert (ann.verified, ann.schedule) == (False, "manual")
    with h.client(token) as mp:
        mp.put_item("song", "Song", 990_000)
        assert mp.put_split("song", [(ann.id, 10_000)]).shares == ((ann.id, 10_000),)
        assert mp.get_split("song").shares == ((ann.id, 10_000),)
        with pytest.raises(PermissionDeniedError):
            mp.get_payee(ann.id)
    with h.client(h.operator_key) as operator:
        balances = operator.payee_balances(ann.id)
        assert (balances.pending_micros, balances.available_micros) == (0, 0)
        assert list(operator.list_payouts(ann.id)) == []


def test_sdk_tips_for_an_item_reach_its_payee(database_url: str, clock: FakeClock) -> None:
    """``tip(..., item=...)``, sync and async; with splits recorded the payee earns the tip."""
    h = _harness(database_url, clock, record_splits=True)
    harness = next(h)
    try:
        token = harness.merchant()
        with harness.client(harness.operator_key) as operator:
            ann = operator.create_payee("Ann", "USD", "ba_ann", schedule="manual")
        with harness.client(token) as mp:
            mp.put_item("page", "Ann's page", 1_000_000)
            mp.put_split("page", [(ann.id, 10_000)])
            fan = mp.create_customer(payment_method_token="pm_card_ok")
            mp.top_up(fan.id, 10_000_000)
            tip = mp.tip(fan.id, 2_000_000, note="thanks", item="page", idempotency_key="t1")
            again = mp.tip(fan.id, 2_000_000, note="thanks", item="page", idempotency_key="t1")
            assert (tip.item, tip.note, tip.funding, tip.replayed) == (
                "page",
                "thanks",
                "wallet",
                False,
            )
            assert (again.id, again.replayed) == (tip.id, True)
            assert mp.tip(fan.id, 500_000).item is None
            with pytest.raises(NotFoundError):
                mp.tip(fan.id, 500_000, item="nope")

        async def main() -> str | None:
            async with harness.async_client(token) as amp:
                return (await amp.tip(fan.id, 1_000_000, item="page")).item

        assert anyio.run(main) == "page"
        with harness.client(harness.operator_key) as operator:
            assert operator.payee_balances(ann.id).pending_micros == 3_000_000
        assert harness.reconciled()
    finally:
        h.close()
