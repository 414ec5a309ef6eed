"""The API's happy paths, on SQLite and PostgreSQL, ending with reconcile clean."""

from __future__ import annotations

from collections.abc import Iterator

import jwt
import pytest

from conftest import FakeClock
from micropay.payments.tokens import verify_entitlement
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


def test_a_reader_tops_up_buys_an_article_and_is_refunded_part(
    api: Api, database_url: str, clock: FakeClock
) -> None:
    merchant, key = api.merchant()
    assert merchant.startswith("mer_")
    assert key.startswith("mp_sk_test_")
    customer = api.customer(key)
    api.item(key, "article-1", 250_000)

    top_up = api.call(
        "POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 10_000_000}
    )
    assert top_up.status_code == 201, top_up.text
    assert top_up.json()["amount"] == "10.00"

    bought = api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "article-1"})
    assert bought.status_code == 201, bought.text
    receipt = bought.json()
    assert (receipt["status"], receipt["funding"], receipt["price"]) == ("ok", "wallet", "0.25")

    again = api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "article-1"})
    assert again.status_code == 200
    assert again.json()["status"] == "already_entitled"
    assert again.json()["id"] == receipt["id"]

    fetched = api.call("GET", f"/v1/purchases/{receipt['id']}", key)
    assert fetched.status_code == 200
    assert fetched.json()["price_micros"] == 250_000

    refund = api.call(
        "POST", f"/v1/purchases/{receipt['id']}/refunds", key, {"amount_micros": 100_000}
    )
    assert refund.status_code == 201, refund.text
    assert (refund.json()["amount"], refund.json()["destination"]) == ("0.10", "wallet")
    too_much = api.call(
        "POST", f"/v1/purchases/{receipt['id']}/refunds", key, {"amount_micros": 200_000}
    )
    assert too_much.status_code == 409
    assert too_much.json()["error"]["code"] == "exceeds_refundable"
    assert _reconciled(database_url)


def test_entitlement_check_and_offline_token(api: Api, clock: FakeClock) -> None:
    merchant, key = api.merchant()
    customer = api.customer(key)
    api.item(key, "song-9", 990_000)
    before = api.call("GET", f"/v1/entitlements?customer={customer}&item=song-9", key)
    assert before.status_code == 200
    assert before.json() == {
        "customer": customer,
        "item": "song-9",
        "active": False,
        "token": None,
    }
    api.call("POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 5_000_000})
    assert (
        api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "song-9"}).status_code
        == 201
    )
    after = api.call("GET", f"/v1/entitlements?customer={customer}&item=song-9", key).json()
    assert after["active"] is True
    [public] = api.call("GET", "/v1/entitlement-keys", key).json()["keys"]
    claims = verify_entitlement(
        after["token"], public["public_key_pem"], merchant, clock() // 1_000_000
    )
    assert (claims.customer, claims.item_ref) == (customer, "song-9")
    with pytest.raises(jwt.InvalidTokenError):
        verify_entitlement(after["token"], public["public_key_pem"], "mer_someone_else", 0)


def test_cursor_pagination_walks_every_customer_once(api: Api) -> None:
    _, key = api.merchant()
    made = {api.customer(key) for _ in range(5)}
    seen: list[str] = []
    cursor = ""
    for _ in range(10):  # bounded: 5 customers in pages of 2 need 3 pages
        r = api.call("GET", f"/v1/customers?limit=2{cursor}", key)
        assert r.status_code == 200, r.text
        page = r.json()
        seen += [c["id"] for c in page["data"]]
        if not page["has_more"]:
            break
        cursor = f"&cursor={page['next_cursor']}"
    assert sorted(seen) == sorted(made)
    assert len(seen) == 5
    capped = api.call("GET", "/v1/customers?limit=101", key)
    assert capped.status_code == 422


def test_purchases_list_and_a_refused_purchase_writes_nothing(api: Api, database_url: str) -> None:
    _, key = api.merchant(funding=["wallet"])
    customer = api.customer(key)
    for ref in ("a", "b", "c"):
        api.item(key, ref, 300_000)
    broke = api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "a"})
    assert broke.status_code == 402
    assert broke.json()["error"]["code"] == "insufficient_funds"
    assert api.call("GET", "/v1/purchases", key).json()["data"] == []
    api.call("POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 5_000_000})
    ids = []
    for ref in ("a", "b", "c"):
        r = api.call("POST", "/v1/purchases", key, {"customer": customer, "item": ref})
        assert r.status_code == 201, r.text
        ids.append(r.json()["id"])
    listed = api.call("GET", "/v1/purchases?limit=2", key).json()
    assert [p["id"] for p in listed["data"]] == ids[:2]
    assert listed["has_more"] is True
    rest = api.call("GET", f"/v1/purchases?limit=2&cursor={listed['next_cursor']}", key).json()
    assert [p["id"] for p in rest["data"]] == ids[2:]
    assert rest["has_more"] is False
    assert _reconciled(database_url)


def test_keys_rotate_and_a_revoked_key_is_refused(api: Api) -> None:
    _, key = api.merchant()
    created = api.call("POST", "/v1/keys", key, {"kind": "secret"})
    assert created.status_code == 201
    new_key = created.json()["token"]
    old_id = key.removeprefix("mp_sk_test_")[:16]
    revoked = api.call("POST", f"/v1/keys/{old_id}/revoke", new_key)
    assert revoked.status_code == 200
    assert revoked.json()["revoked"] is True
    refused = api.call("GET", "/v1/customers", key)
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "api_key_revoked"
    assert api.call("GET", "/v1/customers", new_key).status_code == 200
    listed = api.call("GET", "/v1/keys", new_key).json()["data"]
    assert {(k["id"], k["revoked"]) for k in listed} >= {(old_id, True)}
    assert all("token" not in k for k in listed)


def test_publishable_key_checks_access_but_cannot_spend(api: Api) -> None:
    _, key = api.merchant()
    customer = api.customer(key)
    publishable = api.call("POST", "/v1/keys", key, {"kind": "publishable"}).json()["token"]
    assert publishable.startswith("mp_pk_test_")
    ok = api.call("GET", f"/v1/entitlements?customer={customer}&item=x", publishable)
    assert ok.status_code == 200
    for method, path, body in [
        ("POST", "/v1/purchases", {"customer": customer, "item": "x"}),
        ("POST", f"/v1/customers/{customer}/top-ups", {"amount_micros": 5_000_000}),
        ("GET", "/v1/customers", None),
        ("POST", "/v1/keys", {"kind": "secret"}),
    ]:
        r = api.call(method, path, publishable, body)
        assert r.status_code == 403, (path, r.text)
        assert r.json()["error"]["code"] == "key_scope_insufficient"


def test_health_and_openapi(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    assert api.client.get("/readyz").json() == {"status": "ready"}
    spec = api.client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.1")
    assert "/v1/purchases" in spec["paths"]


def test_operator_only_creates_merchants(api: Api) -> None:
    _, key = api.merchant()
    r = api.call("POST", "/v1/merchants", key, {"name": "x", "currency": "USD"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "key_scope_insufficient"
    r = api.call("GET", "/v1/customers", api.operator_key)
    assert r.status_code == 403


def test_keys_cli_creates_lists_and_revokes(api: Api, database_url: str) -> None:
    from click.testing import CliRunner

    from micropay.cli.api_cmd import keys

    merchant, _ = api.merchant()
    runner = CliRunner()
    url = ["--database-url", database_url]
    made = runner.invoke(keys, ["create", *url, "--merchant", merchant, "--kind", "publishable"])
    assert made.exit_code == 0, made.output
    token = made.output.strip()
    assert token.startswith("mp_pk_test_")
    lookup = token.removeprefix("mp_pk_test_")[:16]
    listed = runner.invoke(keys, ["list", *url, "--merchant", merchant])
    assert f"{lookup}  publishable test  active" in listed.output
    assert token not in listed.output
    wrong_mode = runner.invoke(keys, ["create", *url, "--merchant", merchant, "--mode", "live"])
    assert wrong_mode.exit_code != 0
    assert "test mode" in wrong_mode.output
    assert runner.invoke(keys, ["revoke", *url, lookup]).exit_code == 0
    assert runner.invoke(keys, ["revoke", *url, lookup]).exit_code != 0
    refused = api.call("GET", "/v1/entitlement-keys", token)
    assert refused.status_code == 401


@pytest.mark.parametrize("cache_s", [30.0, 0.0])
def test_a_key_revoked_elsewhere_is_refused_after_the_auth_cache(
    database_url: str, clock: FakeClock, cache_s: float
) -> None:
    """The trade-off of ``auth_cache_s``, both ways: trusted until it passes, or never cached."""
    from micropay.api.admin import revoke_key

    with running_api(database_url, clock, auth_cache_s=cache_s) as api:
        _, key = api.merchant()
        assert api.call("GET", "/v1/entitlement-keys", key).status_code == 200
        lookup = key.split("_")[-1][:16]
        assert revoke_key(database_url, lookup)  # the CLI's way: another process
        after = api.call("GET", "/v1/entitlement-keys", key)
        if cache_s:
            assert after.status_code == 200  # still trusted: within the cache time
        else:
            assert after.status_code == 401
            assert after.json()["error"]["code"] == "api_key_revoked"


def test_the_longest_idempotency_key_works_on_every_money_endpoint(
    api: Api, database_url: str
) -> None:
    """A 255-character key (the header's maximum) is hashed for the service, not refused."""
    _, key = api.merchant()
    customer = api.customer(key)
    api.item(key, "article-1", 250_000)
    long_key = "k" * 255
    top_up = api.call(
        "POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 10_000_000},
        idem=long_key,
    )  # fmt: skip
    assert top_up.status_code == 201, top_up.text
    again = api.call(
        "POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 10_000_000},
        idem=long_key,
    )  # fmt: skip
    assert (again.status_code, again.content) == (201, top_up.content)
    bought = api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "article-1"})
    assert bought.status_code == 201, bought.text
    refund = api.call(
        "POST", f"/v1/purchases/{bought.json()['id']}/refunds", key, {"amount_micros": 100_000},
        idem="r" * 255,
    )  # fmt: skip
    assert refund.status_code == 201, refund.text
    credit = api.call(
        "POST", "/v1/store-credit", key, {"count": 1, "value_micros": 100_000},
        idem="s" * 255,
    )  # fmt: skip
    assert credit.status_code == 201, credit.text
    assert _reconciled(database_url)
