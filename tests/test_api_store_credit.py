"""Store credit over HTTP: a merchant issues it, its till redeems it in parts; refused elsewhere."""

from __future__ import annotations

from micropay.service.reconcile import reconcile
from micropay.store import open_store
from test_api_harness import running_api


def test_a_till_redeems_store_credit_in_two_parts(database_url, clock) -> None:  # type: ignore[no-untyped-def]
    with running_api(database_url, clock) as api:
        _, shop = api.merchant("Corner Books", funding=["wallet"])
        _, other = api.merchant("Elsewhere", funding=["wallet"])
        # The shop earns 5.00 first: store credit is funded from its earnings.
        customer = api.customer(shop)
        api.item(shop, "atlas", 5_000_000)
        assert (
            api.call(
                "POST", f"/v1/customers/{customer}/top-ups", shop, {"amount_micros": 5_000_000}
            ).status_code
            == 201
        )
        assert (
            api.call(
                "POST", "/v1/purchases", shop, {"customer": customer, "item": "atlas"}
            ).status_code
            == 201
        )

        issued = api.call(
            "POST",
            "/v1/store-credit",
            shop,
            {"count": 1, "value_micros": 1_000_000},
            idem="credit-1",
        )
        assert issued.status_code == 201, issued.text
        [code] = issued.json()["codes"]
        replay = api.call(
            "POST",
            "/v1/store-credit",
            shop,
            {"count": 1, "value_micros": 1_000_000},
            idem="credit-1",
        )
        assert replay.json()["codes"] == []  # codes are shown once, never stored in plain

        first = api.call(
            "POST", "/v1/store-credit/redemptions", shop, {"code": code, "amount_micros": 600_000}
        )
        assert first.status_code == 201, first.text
        assert first.json()["remaining"] == "0.40"
        abroad = api.call(
            "POST", "/v1/store-credit/redemptions", other, {"code": code, "amount_micros": 100_000}
        )
        assert abroad.status_code == 403
        assert abroad.json()["error"]["code"] == "wrong_merchant"
        too_much = api.call(
            "POST", "/v1/store-credit/redemptions", shop, {"code": code, "amount_micros": 500_000}
        )
        assert too_much.status_code == 409
        typo = code[:-1] + ("0" if code[-1] != "0" else "1")
        mistyped = api.call(
            "POST", "/v1/store-credit/redemptions", shop, {"code": typo, "amount_micros": 1}
        )
        assert mistyped.status_code == 404
        assert mistyped.json()["error"]["code"] == "code_malformed"
        rest = api.call(
            "POST", "/v1/store-credit/redemptions", shop, {"code": code, "amount_micros": 400_000}
        )
        assert rest.json()["remaining_micros"] == 0
    store = open_store(database_url)
    try:
        report = reconcile(store)
        assert report.ok, report.violations
    finally:
        store.close()
