"""Payment methods and gift cards over HTTP, on SQLite and PostgreSQL, reconcile clean after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import FakeClock
from micropay.processors.simulated import DECLINING_PAYMENT_METHOD
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from test_api_harness import Api, running_api


@pytest.fixture
def api(database_url: str, clock: FakeClock) -> Iterator[Api]:
    with running_api(database_url, clock) as running:
        yield running


def _reconciled(database_url: str) -> bool:
    store = open_store(database_url)
    try:
        return reconcile(store).ok
    finally:
        store.close()


def test_attach_a_token_then_top_up_then_detach(api: Api, database_url: str) -> None:
    _, key = api.merchant()
    r = api.call("POST", "/v1/customers", key, {})
    customer = r.json()["id"]
    assert r.json()["has_payment_method"] is False
    top_up = {"amount_micros": 5_000_000}
    refused = api.call("POST", f"/v1/customers/{customer}/top-ups", key, top_up)
    assert (refused.status_code, refused.json()["error"]["code"]) == (402, "no_payment_method")

    path = f"/v1/customers/{customer}/payment-method"
    attached = api.call("POST", path, key, {"payment_method_token": "pm_card_ok"}, idem="pm-1")
    assert attached.status_code == 200, attached.text
    assert attached.json()["has_payment_method"] is True
    again = api.call("POST", path, key, {"payment_method_token": "pm_card_ok"}, idem="pm-1")
    assert again.content == attached.content
    assert api.call("POST", f"/v1/customers/{customer}/top-ups", key, top_up).status_code == 201

    declining = {"payment_method_token": DECLINING_PAYMENT_METHOD}
    assert api.call("POST", path, key, declining).status_code == 200
    declined = api.call("POST", f"/v1/customers/{customer}/top-ups", key, top_up)
    assert (declined.status_code, declined.json()["error"]["code"]) == (402, "charge_declined")

    detached = api.call("DELETE", path, key)
    assert detached.json()["has_payment_method"] is False
    assert api.call("GET", f"/v1/customers/{customer}", key).json()["has_payment_method"] is False
    assert _reconciled(database_url)


def test_card_numbers_and_bad_tokens_are_refused(api: Api) -> None:
    _, key = api.merchant()
    customer = api.customer(key)
    path = f"/v1/customers/{customer}/payment-method"
    for body in (
        {"payment_method_token": "4242424242424242"},
        {"payment_method_token": "pm_ok", "processor_customer_token": "4242 4242 4242 4242"},
        {"payment_method_token": ""},
        {"payment_method_token": "pm ok"},
        {"payment_method_token": "pm_ok", "card_number": "4242424242424242"},
        {},
    ):
        r = api.call("POST", path, key, body)
        assert (r.status_code, r.json()["error"]["code"]) == (422, "validation_failed"), body
    assert "4242" not in api.call("GET", f"/v1/customers/{customer}", key).text


def test_platform_gift_cards_issue_once_and_redeem_into_the_wallet(
    api: Api, database_url: str
) -> None:
    _, key = api.merchant()
    body = {"count": 2, "value_micros": 3_000_000, "currency": "USD"}
    issued = api.call("POST", "/v1/gift-cards", api.operator_key, body, idem="gc-1")
    assert issued.status_code == 201, issued.text
    codes = issued.json()["codes"]
    assert len(codes) == 2
    assert issued.json()["value"] == "3.00"
    replay = api.call("POST", "/v1/gift-cards", api.operator_key, body, idem="gc-1")
    assert replay.status_code == 201
    assert replay.json() == {**issued.json(), "codes": []}
    merchant_key = api.call("POST", "/v1/gift-cards", key, body)
    assert merchant_key.status_code == 403

    customer = api.customer(key)
    path = f"/v1/customers/{customer}/gift-card-redemptions"
    redeemed = api.call("POST", path, key, {"code": codes[0]}, idem="rd-1")
    assert redeemed.status_code == 201, redeemed.text
    out = redeemed.json()
    assert (out["amount_micros"], out["destination"], out["customer"]) == (
        3_000_000,
        "wallet",
        customer,
    )
    assert api.call("POST", path, key, {"code": codes[0]}, idem="rd-1").content == redeemed.content
    spent = api.call("POST", path, key, {"code": codes[0]})
    assert (spent.status_code, spent.json()["error"]["code"]) == (409, "card_spent")
    typo = api.call(
        "POST", path, key, {"code": codes[1][:-1] + ("A" if codes[1][-1] != "A" else "B")}
    )
    assert typo.status_code == 404
    api.item(key, "a", 250_000)
    bought = api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "a"})
    assert bought.json()["funding"] == "wallet"
    assert _reconciled(database_url)


def test_store_credit_redeems_into_store_credit(api: Api, database_url: str) -> None:
    _, key = api.merchant()
    earner = api.customer(key)
    api.item(key, "a", 5_000_000)
    api.call("POST", f"/v1/customers/{earner}/top-ups", key, {"amount_micros": 10_000_000})
    api.call("POST", "/v1/purchases", key, {"customer": earner, "item": "a"})
    credit = api.call("POST", "/v1/store-credit", key, {"count": 1, "value_micros": 1_000_000})
    assert credit.status_code == 201, credit.text
    customer = api.customer(key)
    r = api.call(
        "POST",
        f"/v1/customers/{customer}/gift-card-redemptions",
        key,
        {"code": credit.json()["codes"][0]},
    )
    assert r.status_code == 201, r.text
    assert (r.json()["destination"], r.json()["amount"]) == ("store_credit", "1.00")
    assert _reconciled(database_url)


def test_another_merchants_store_credit_is_refused_and_kept(api: Api, database_url: str) -> None:
    _, key_a = api.merchant("A")
    _, key_b = api.merchant("B")
    earner = api.customer(key_a)
    api.item(key_a, "a", 5_000_000)
    api.call("POST", f"/v1/customers/{earner}/top-ups", key_a, {"amount_micros": 10_000_000})
    api.call("POST", "/v1/purchases", key_a, {"customer": earner, "item": "a"})
    code = api.call("POST", "/v1/store-credit", key_a, {"count": 1, "value_micros": 1_000_000})
    body = {"code": code.json()["codes"][0]}
    at_b = api.customer(key_b)
    r = api.call("POST", f"/v1/customers/{at_b}/gift-card-redemptions", key_b, body)
    assert (r.status_code, r.json()["error"]["code"]) == (403, "wrong_merchant")
    mine = api.call("POST", f"/v1/customers/{earner}/gift-card-redemptions", key_a, body)
    assert mine.status_code == 201, mine.text
    assert mine.json()["amount_micros"] == 1_000_000  # nothing left B's way
    assert _reconciled(database_url)
