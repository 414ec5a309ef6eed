"""Tabs, tips, subscriptions and usage over HTTP (SQLite and PostgreSQL), reconcile clean after."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from conftest import FakeClock
from micropay.processors.simulated import DECLINING_PAYMENT_METHOD
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from test_api_harness import Api, running_api

DAY_US = 86_400 * 1_000_000


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


def _on_tab(api: Api, key: str, payment_method: str = "pm_card_ok") -> str:
    customer = api.customer(key, payment_method)
    api.item(key, "a", 250_000)
    bought = api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "a"})
    assert bought.status_code == 201, bought.text
    assert bought.json()["funding"] == "tab"
    return customer


# --- tabs ---------------------------------------------------------------------------------------


def test_tab_shows_what_is_owed_and_settles_now(
    api: Api, database_url: str, clock: FakeClock
) -> None:
    _, key = api.merchant()
    customer = _on_tab(api, key)
    tab = api.call("GET", f"/v1/customers/{customer}/tab", key)
    assert tab.status_code == 200, tab.text
    body = tab.json()
    assert (body["owed_micros"], body["owed"], body["state"]) == (250_000, "0.25", "open")
    assert (body["limit_micros"], body["settlement_pending"]) == (1_000_000, None)
    assert body["period_ends_at_us"] - body["period_started_at_us"] == 30 * DAY_US

    path = f"/v1/customers/{customer}/tab/settle"
    settled = api.call("POST", path, key, idem="settle-1")
    assert settled.status_code == 201, settled.text
    out = settled.json()
    assert (out["status"], out["amount_micros"], out["amount"]) == ("succeeded", 250_000, "0.25")
    assert out["charge"].startswith("chg_")
    assert out["tab"]["owed_micros"] == 0
    assert out["tab"]["limit_micros"] == 2_000_000  # paid without dunning: the limit grows
    again = api.call("POST", path, key, idem="settle-1")
    assert again.content == settled.content
    assert again.headers["Idempotent-Replayed"] == "true"
    nothing = api.call("POST", path, key, idem="settle-2")
    assert nothing.status_code == 200
    assert (nothing.json()["status"], nothing.json()["charge"]) == ("nothing_owed", None)
    assert _reconciled(database_url)


def test_a_declined_settlement_is_402_and_freezes_the_tab(api: Api, database_url: str) -> None:
    _, key = api.merchant()
    customer = _on_tab(api, key, DECLINING_PAYMENT_METHOD)
    r = api.call("POST", f"/v1/customers/{customer}/tab/settle", key)
    assert (r.status_code, r.json()["error"]["code"]) == (402, "charge_declined")
    tab = api.call("GET", f"/v1/customers/{customer}/tab", key).json()
    assert (tab["state"], tab["owed_micros"]) == ("frozen", 250_000)
    assert _reconciled(database_url)


# --- subscriptions --------------------------------------------------------------------------------


def test_plan_subscribe_get_cancel(api: Api, database_url: str, clock: FakeClock) -> None:
    _, key = api.merchant()
    plan = api.call(
        "PUT", "/v1/plans/pro", key, {"name": "Pro", "period": "monthly", "price_micros": 5_000_000}
    )
    assert plan.status_code == 200, plan.text
    assert (plan.json()["price"], plan.json()["currency"]) == ("5.00", "USD")
    assert api.call("GET", "/v1/plans/pro", key).json() == plan.json()
    customer = api.customer(key)
    api.call("POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 10_000_000})

    body = {"customer": customer, "plan": "pro", "time_zone": "Europe/Paris"}
    made = api.call("POST", "/v1/subscriptions", key, body, idem="sub-1")
    assert made.status_code == 201, made.text
    sub = made.json()
    assert (sub["state"], sub["funding"], sub["period_number"]) == ("active", "wallet", 0)
    assert sub["period_starts_at_us"] <= clock() < sub["period_ends_at_us"]
    assert sub["id"].startswith("sub_")
    assert api.call("POST", "/v1/subscriptions", key, body, idem="sub-1").content == made.content
    access = api.call("GET", f"/v1/entitlements?customer={customer}&item=pro", key).json()
    assert access["active"] is True
    fetched = api.call("GET", f"/v1/subscriptions/{sub['id']}", key).json()
    assert fetched == {**sub, "funding": None}

    at_end = api.call("POST", f"/v1/subscriptions/{sub['id']}/cancel", key, {})
    assert at_end.status_code == 200, at_end.text
    assert (at_end.json()["state"], at_end.json()["cancel_at_period_end"]) == ("active", True)
    now = api.call("POST", f"/v1/subscriptions/{sub['id']}/cancel", key, {"at_period_end": False})
    assert now.json()["state"] == "cancelled"
    access = api.call("GET", f"/v1/entitlements?customer={customer}&item=pro", key).json()
    assert access["active"] is False
    twice = api.call("POST", f"/v1/subscriptions/{sub['id']}/cancel", key, {})
    assert (twice.status_code, twice.json()["error"]["code"]) == (409, "already_cancelled")
    assert _reconciled(database_url)


def test_subscription_refusals_write_nothing(api: Api) -> None:
    _, key = api.merchant(funding=["wallet"])
    api.call("PUT", "/v1/plans/pro", key, {"name": "Pro", "period": "yearly", "price_micros": 9})
    customer = api.customer(key)
    cases = [
        ({"customer": customer, "plan": "nope"}, 404, "plan_not_found"),
        ({"customer": customer, "plan": "pro"}, 402, "insufficient_funds"),  # empty wallet
        ({"customer": customer, "plan": "pro", "time_zone": "Mars/Base"}, 422, "time_zone_invalid"),
        ({"customer": "cus_0000000000000000", "plan": "pro"}, 404, "customer_not_found"),
        ({"customer": customer, "plan": "pro", "price_micros": 1}, 422, "validation_failed"),
    ]
    for body, status, code in cases:
        r = api.call("POST", "/v1/subscriptions", key, body)
        assert (r.status_code, r.json()["error"]["code"]) == (status, code), body
    bad_plan = api.call(
        "PUT", "/v1/plans/x", key, {"name": "X", "period": "hourly", "price_micros": 1}
    )
    assert bad_plan.status_code == 422
    assert api.call("GET", "/v1/plans/x", key).status_code == 404


# --- usage ---------------------------------------------------------------------------------


def test_meter_record_usage_idempotently_and_list(api: Api, clock: FakeClock) -> None:
    _, key = api.merchant()
    meter = api.call("PUT", "/v1/meters/api-calls", key, {"unit_price_micros": 1_000})
    assert meter.status_code == 200, meter.text
    assert api.call("GET", "/v1/meters/api-calls", key).json() == meter.json()
    alice, bob = api.customer(key), api.customer(key)
    body = {"customer": alice, "meter": "api-calls", "quantity": 5}
    first = api.call("POST", "/v1/usage-events", key, body, idem="u-1")
    assert first.status_code == 201, first.text
    used = first.json()
    assert (used["amount_micros"], used["billed"], used["customer"]) == (5_000, False, alice)
    assert api.call("POST", "/v1/usage-events", key, body, idem="u-1").content == first.content
    changed = api.call("POST", "/v1/usage-events", key, {**body, "quantity": 6}, idem="u-1")
    assert (changed.status_code, changed.json()["error"]["code"]) == (409, "idempotency_key_reused")
    clock.advance(1)
    api.call("POST", "/v1/usage-events", key, {**body, "customer": bob, "quantity": 2})
    unknown = api.call("POST", "/v1/usage-events", key, {**body, "meter": "nope"})
    assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "meter_not_found")
    for bad in ({**body, "quantity": 0}, {**body, "quantity": 2.0}, {**body, "extra": 1}):
        assert api.call("POST", "/v1/usage-events", key, bad).status_code == 422

    everything = api.call("GET", "/v1/usage-events", key).json()
    assert [(u["customer"], u["quantity"]) for u in everything["data"]] == [(alice, 5), (bob, 2)]
    page = api.call("GET", "/v1/usage-events?limit=1", key).json()
    assert (page["has_more"], page["next_cursor"]) == (True, used["id"])
    rest = api.call("GET", f"/v1/usage-events?limit=1&cursor={page['next_cursor']}", key).json()
    assert [u["customer"] for u in rest["data"]] == [bob]
    only_bob = api.call("GET", f"/v1/usage-events?customer={bob}", key).json()["data"]
    assert [u["quantity"] for u in only_bob] == [2]


def test_ids_past_64_bits_are_not_found(api: Api) -> None:
    _, key = api.merchant()
    too_big = "9" * 19  # > 2**63 - 1: would overflow a BIGINT parameter
    assert api.call("GET", f"/v1/subscriptions/sub_{too_big}", key).status_code == 404
    assert api.call("GET", f"/v1/usage-events?cursor=use_{too_big}", key).status_code == 404
    assert api.call("GET", f"/v1/subscriptions/sub_{2**63 - 1}", key).status_code == 404


# --- tips ---------------------------------------------------------------------------------------


def test_a_tip_for_an_item_reaches_its_payees(database_url: str, clock: FakeClock) -> None:
    """``item`` is optional; a tip for an item with a split is split 70/30 like its sales."""
    with running_api(database_url, clock, record_splits=True) as api:
        _, key = api.merchant(funding=["wallet"])
        ops = api.operator_key
        payees = []
        for name in ("author", "publisher"):
            body = {"name": name, "currency": "USD", "destination_token": f"ba_{name}"}
            made = api.call("POST", "/v1/payees", ops, body)
            assert made.status_code == 201, made.text
            payees.append(made.json()["id"])
        api.item(key, "page", 1_000_000)
        shares = [
            {"payee": payees[0], "share_bps": 7_000},
            {"payee": payees[1], "share_bps": 3_000},
        ]
        assert api.call("PUT", "/v1/items/page/split", key, {"shares": shares}).status_code == 200
        fan = api.customer(key)
        topped = api.call("POST", f"/v1/customers/{fan}/top-ups", key, {"amount_micros": 5_000_000})
        assert topped.status_code == 201, topped.text

        body = {"customer": fan, "amount_micros": 1_000_001, "note": "thanks", "item": "page"}
        tipped = api.call("POST", "/v1/tips", key, body, idem="tip-1")
        assert tipped.status_code == 201, tipped.text
        out = tipped.json()
        assert out["id"].startswith("tip_")
        assert (out["amount_micros"], out["amount"], out["currency"]) == (
            1_000_001,
            "1.000001",
            "USD",
        )
        assert (out["funding"], out["note"], out["item"], out["customer"]) == (
            "wallet",
            "thanks",
            "page",
            fan,
        )
        again = api.call("POST", "/v1/tips", key, body, idem="tip-1")
        assert again.content == tipped.content
        assert again.headers["Idempotent-Replayed"] == "true"
        pending = [
            api.call("GET", f"/v1/payees/{p}/balances", ops).json()["pending_micros"]
            for p in payees
        ]
        assert pending == [700_001, 300_000]  # 1,000,001 split 70/30: the remainder to the author

        plain = api.call("POST", "/v1/tips", key, {"customer": fan, "amount_micros": 500_000})
        assert plain.status_code == 201, plain.text
        assert plain.json()["item"] is None
        unknown = api.call(
            "POST", "/v1/tips", key, {"customer": fan, "amount_micros": 500_000, "item": "nope"}
        )
        assert (unknown.status_code, unknown.json()["error"]["code"]) == (404, "item_not_found")
        extra = api.call(
            "POST", "/v1/tips", key, {"customer": fan, "amount_micros": 1, "items": "page"}
        )
        assert extra.status_code == 422  # unknown fields are refused
        bad_item = api.call(
            "POST", "/v1/tips", key, {"customer": fan, "amount_micros": 500_000, "item": "a b"}
        )
        assert bad_item.status_code == 422
        too_big = api.call("POST", "/v1/tips", key, {"customer": fan, "amount_micros": 200_000_000})
        assert (too_big.status_code, too_big.json()["error"]["code"]) == (
            422,
            "amount_above_maximum",
        )
        poor = api.call("POST", "/v1/tips", key, {"customer": fan, "amount_micros": 9_000_000})
        assert (poor.status_code, poor.json()["error"]["code"]) == (402, "insufficient_funds")
        rest = {"customer": fan, "amount_micros": 5_000_000 - 1_000_001 - 500_000}
        assert api.call("POST", "/v1/tips", key, rest).status_code == 201  # the wallet, exactly
    assert _reconciled(database_url)
