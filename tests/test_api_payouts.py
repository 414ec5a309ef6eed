"""Payees, balances, payouts and item splits over HTTP, on SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from conftest import FakeClock
from micropay.api.routes_payouts import find_payee
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.payments import Payments
from micropay.service.payouts import Payouts
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from test_api_harness import Api, running_api


@pytest.fixture
def api(database_url: str, clock: FakeClock) -> Iterator[Api]:
    with running_api(database_url, clock, record_splits=True) as running:
        yield running


def _payee(api: Api, name: str, currency: str = "USD", idem: str | None = None) -> str:
    body = {"name": name, "currency": currency, "destination_token": f"ba_{name}"}
    r = api.call("POST", "/v1/payees", api.operator_key, body, idem=idem)
    assert r.status_code == 201, r.text
    return str(r.json()["id"])


def _with_payouts(database_url: str, clock: FakeClock, work: Any) -> Any:
    store = open_store(database_url)
    try:
        return work(Payouts(Payments(store, SimulatedProcessor(), clock=clock)))
    finally:
        store.close()


def test_payees_are_the_operators(api: Api) -> None:
    _, key = api.merchant()
    body = {"name": "Ann", "currency": "USD", "destination_token": "ba_ann", "schedule": "daily"}
    first = api.call("POST", "/v1/payees", api.operator_key, body, idem="p-1")
    assert first.status_code == 201, first.text
    payee = first.json()
    assert (payee["verified"], payee["schedule"], payee["currency"]) == (False, "daily", "USD")
    assert "destination_token" not in payee
    again = api.call("POST", "/v1/payees", api.operator_key, body, idem="p-1")
    assert again.content == first.content
    assert api.call("GET", f"/v1/payees/{payee['id']}", api.operator_key).json() == payee
    for path in ("", "/balances", "/payouts"):
        r = api.call("GET", f"/v1/payees/{payee['id']}{path}", key)
        assert (r.status_code, r.json()["error"]["code"]) == (403, "key_scope_insufficient")
    assert api.call("POST", "/v1/payees", key, body).status_code == 403
    missing = api.call("GET", "/v1/payees/pay_0000000000000000", api.operator_key)
    assert missing.status_code == 404
    for bad in (
        {**body, "destination_token": ""},
        {**body, "currency": "XXX"},
        {**body, "schedule": "hourly"},
        {**body, "threshold_micros": 0},
        {**body, "hold_s": -1},
    ):
        assert api.call("POST", "/v1/payees", api.operator_key, bad).status_code == 422, bad


def test_split_a_sale_70_30_and_read_balances_and_payouts(
    api: Api, database_url: str, clock: FakeClock
) -> None:
    merchant, key = api.merchant()
    author, publisher = _payee(api, "author"), _payee(api, "publisher")
    fee = {"fee_bps": 1_000, "fixed_micros": 0}  # 10%
    path = f"/v1/merchants/{merchant}/platform-fee"
    assert api.call("GET", path, api.operator_key).json()["fee_bps"] == 0
    assert api.call("PUT", path, api.operator_key, fee).json() == {"merchant": merchant, **fee}
    assert api.call("PUT", path, key, fee).status_code == 403
    assert api.call("GET", path, key).status_code == 403
    bad = api.call("PUT", path, api.operator_key, {"fee_bps": 10_001})
    assert bad.status_code == 422
    missing = "/v1/merchants/mer_0000000000000000/platform-fee"
    assert api.call("PUT", missing, api.operator_key, fee).status_code == 404
    api.item(key, "book", 1_000_000)
    split = {
        "shares": [{"payee": author, "share_bps": 7_000}, {"payee": publisher, "share_bps": 3_000}]
    }
    put = api.call("PUT", "/v1/items/book/split", key, split)
    assert put.status_code == 200, put.text
    assert put.json() == {"item_ref": "book", **split}
    assert api.call("GET", "/v1/items/book/split", key).json() == put.json()

    reader = api.customer(key)
    api.call("POST", f"/v1/customers/{reader}/top-ups", key, {"amount_micros": 5_000_000})
    bought = api.call("POST", "/v1/purchases", key, {"customer": reader, "item": "book"})
    assert bought.status_code == 201, bought.text
    ops = api.operator_key
    a = api.call("GET", f"/v1/payees/{author}/balances", ops).json()
    b = api.call("GET", f"/v1/payees/{publisher}/balances", ops).json()
    # 1.00 less the 10% fee, split exactly 70/30
    assert (a["pending_micros"], b["pending_micros"]) == (630_000, 270_000)
    assert a["available_micros"] == b["available_micros"] == 0

    assert api.call("GET", f"/v1/payees/{author}/payouts", ops).json()["data"] == []
    sent = _with_payouts(database_url, clock, lambda p: p.start_verification(_internal(p, author)))
    assert sent.status.value == "deposits_sent"
    first = api.call("GET", f"/v1/payees/{author}/payouts?limit=1", ops).json()
    assert first["has_more"] is True
    rest = api.call("GET", f"/v1/payees/{author}/payouts?cursor={first['next_cursor']}", ops)
    both = first["data"] + rest.json()["data"]
    assert [(x["purpose"], x["status"]) for x in both] == [("micro_deposit", "succeeded")] * 2
    assert all(0 < x["amount_micros"] < 1_000_000 for x in both)
    other = api.call("GET", f"/v1/payees/{publisher}/payouts?cursor={both[0]['id']}", ops)
    assert other.status_code == 404  # a cursor of another payee's payout
    assert reconcile_ok(database_url)


def _internal(payouts: Payouts, public_id: str) -> int:
    with payouts.store.read() as tx:
        return int(find_payee(tx, public_id).id)


def reconcile_ok(database_url: str) -> bool:
    store = open_store(database_url)
    try:
        return reconcile(store).ok
    finally:
        store.close()


def test_split_refusals(api: Api) -> None:
    _, key = api.merchant()
    _, other = api.merchant("Other")
    ann, euro = _payee(api, "ann"), _payee(api, "eve", "EUR")
    api.item(key, "book")
    cases = [
        ({"shares": [{"payee": ann, "share_bps": 6_000}]}, 422, "validation_failed"),
        ({"shares": [{"payee": euro, "share_bps": 10_000}]}, 422, "validation_failed"),
        ({"shares": [{"payee": "pay_0000000000000000", "share_bps": 10_000}]}, 404, "not_found"),
        ({"shares": []}, 422, "validation_failed"),
        ({"shares": [{"payee": ann, "share_bps": 10_000, "x": 1}]}, 422, "validation_failed"),
    ]
    for body, status, code in cases:
        r = api.call("PUT", "/v1/items/book/split", key, body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body
    assert api.call("GET", "/v1/items/book/split", key).json()["shares"] == []
    whole = {"shares": [{"payee": ann, "share_bps": 10_000}]}
    assert api.call("PUT", "/v1/items/book/split", key, whole).status_code == 200
    # Another merchant has no item "book": its split is not found, A's is untouched.
    assert api.call("GET", "/v1/items/book/split", other).status_code == 404
    assert api.call("PUT", "/v1/items/book/split", other, whole).status_code == 404
    assert api.call("GET", "/v1/items/book/split", key).json()["shares"] == whole["shares"]
