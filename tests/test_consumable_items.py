"""Consumable items: a price per use, on both stores and over the API.

An ordinary item is bought once (or once per access period): a second purchase
answers ``already_entitled`` and charges nothing. A consumable item (an API
call, a download) is a new sale every time: each purchase with a new key
charges again and grants nothing lasting; a replayed key still charges once.
"""

from __future__ import annotations

import pytest

from micropay.core.accounts import available_micros
from micropay.core.money import parse_amount
from micropay.payments import chart
from micropay.payments.models import FundingSource, PurchaseStatus
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments, PaymentsInputError
from micropay.service.processor_reconcile import reconcile_processor
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from test_api_harness import running_api


def usd(text: str) -> int:
    return parse_amount(text, "USD")


@pytest.fixture
def processor() -> SimulatedProcessor:
    return SimulatedProcessor()


@pytest.fixture
def payments(store, processor, clock) -> Payments:  # type: ignore[no-untyped-def]
    return Payments(store, processor, clock=clock)


def wallet(payments: Payments, customer_id: int) -> int:
    account_id = chart.wallet_account(customer_id, "USD")
    return available_micros(payments.ledger.accounts([account_id])[account_id])


def test_each_call_of_a_consumable_is_charged_and_an_article_only_once(payments) -> None:  # type: ignore[no-untyped-def]
    api = payments.create_merchant("Weather API", "USD", funding_policy=(FundingSource.wallet,))
    dev = payments.create_customer("USD", processor_customer_token="c", payment_method_token="p")
    payments.set_item(api.id, "forecast-call", "One forecast", usd("0.02"), consumable=True)
    payments.set_item(api.id, "report", "Monthly report", usd("0.50"))
    payments.top_up(dev.id, usd("5.00"), "t1")

    calls = [payments.purchase(api.id, dev.id, "forecast-call", f"call-{n}") for n in range(3)]
    assert [r.status for r in calls] == [PurchaseStatus.ok] * 3
    assert len({r.purchase_id for r in calls}) == 3
    assert all(r.entitlement_id == 0 for r in calls)
    assert not payments.has_access(api.id, dev.id, "forecast-call")
    replay = payments.purchase(api.id, dev.id, "forecast-call", "call-0")
    assert (replay.status, replay.replayed, replay.purchase_id) == (
        PurchaseStatus.ok,
        True,
        calls[0].purchase_id,
    )
    # The control: an ordinary item is charged once, then owned.
    first = payments.purchase(api.id, dev.id, "report", "r1")
    again = payments.purchase(api.id, dev.id, "report", "r2")
    assert (first.status, again.status) == (PurchaseStatus.ok, PurchaseStatus.already_entitled)
    assert wallet(payments, dev.id) == usd("5.00") - 3 * usd("0.02") - usd("0.50")
    assert reconcile(payments.store).ok


def test_direct_charges_of_a_consumable_charge_every_call(payments, processor) -> None:  # type: ignore[no-untyped-def]
    shop = payments.create_merchant("Renders", "USD", funding_policy=(FundingSource.direct,))
    eve = payments.create_customer("USD", processor_customer_token="c", payment_method_token="p")
    payments.set_item(shop.id, "render", "One render", usd("20.00"), consumable=True)
    receipts = [payments.purchase(shop.id, eve.id, "render", f"k{n}") for n in range(2)]
    assert [(r.status, r.funding) for r in receipts] == [
        (PurchaseStatus.ok, FundingSource.direct)
    ] * 2
    assert len(processor.succeeded_charges()) == 2
    assert not payments.has_access(shop.id, eve.id, "render")
    assert reconcile(payments.store).ok
    assert reconcile_processor(payments.store, processor.succeeded_charges()) == []


def test_a_consumable_with_an_access_period_is_refused(payments) -> None:  # type: ignore[no-untyped-def]
    shop = payments.create_merchant("Shop", "USD")
    with pytest.raises(PaymentsInputError, match="consumable"):
        payments.set_item(shop.id, "x", "X", usd("0.10"), access_period_s=60, consumable=True)
    with pytest.raises(PaymentsInputError, match="consumable"):
        payments.set_item(shop.id, "x", "X", usd("0.10"), consumable=1)  # type: ignore[arg-type]


def test_api_sells_a_consumable_per_call(database_url: str, clock) -> None:  # type: ignore[no-untyped-def]
    with running_api(database_url, clock) as api:
        _, key = api.merchant(funding=["wallet"])
        customer = api.customer(key)
        made = api.call(
            "PUT",
            "/v1/items/forecast-call",
            key,
            {"name": "One forecast", "price_micros": 20_000, "consumable": True},
        )
        assert (made.status_code, made.json()["consumable"]) == (200, True), made.text
        assert api.call("GET", "/v1/items/forecast-call", key).json()["consumable"] is True
        refused = api.call(
            "PUT",
            "/v1/items/bad",
            key,
            {"name": "Bad", "price_micros": 20_000, "consumable": True, "access_period_s": 60},
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["code"] == "validation_failed"
        top_up = api.call(
            "POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 5_000_000}
        )
        assert top_up.status_code == 201, top_up.text
        bought = [
            api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "forecast-call"})
            for _ in range(3)
        ]
        assert [(b.status_code, b.json()["status"]) for b in bought] == [(201, "ok")] * 3
        assert len({b.json()["id"] for b in bought}) == 3
    store = open_store(database_url)
    try:
        assert reconcile(store).ok
        with store.read() as tx:
            charged = (
                tx._cur.execute(
                    "SELECT count(*), sum(price_micros) FROM purchases"
                    " WHERE item_ref = 'forecast-call'"
                )
                or tx._cur
            )
            assert tuple(charged.fetchall()[0]) == (3, 60_000)
    finally:
        store.close()
