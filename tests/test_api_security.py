"""Tenant isolation, idempotency, keys and modes, limits, bad input, and logs without secrets."""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from conftest import FakeClock
from micropay.api import keys as api_keys
from micropay.api.admin import KeyAdminError, create_key
from micropay.api.routes_common import fingerprint as _fingerprint
from micropay.api.runtime import api_tx
from micropay.api.schemas import CustomerCreate
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.store.api_sql import ApiKeyRow
from test_api_harness import Api, running_api

CARD = "4242424242424242"


@pytest.fixture
def api(database_url: str, clock: FakeClock) -> Iterator[Api]:
    with running_api(database_url, clock) as running:
        yield running


def _write(database_url: str, operation: Any) -> Any:
    store = open_store(database_url)
    try:
        with store.write() as tx:  # type: ignore[attr-defined]
            return operation(tx)
    finally:
        store.close()


def _merchant_id(database_url: str, public_id: str) -> int:
    return int(_write(database_url, lambda tx: tx.find_merchant(public_id).id))


# --- tenant isolation ----------------------------------------------------------------


def test_another_merchants_ids_answer_404_on_every_endpoint(api: Api, database_url: str) -> None:
    _, key_a = api.merchant("A")
    _, key_b = api.merchant("B")
    hook = api.call("POST", "/v1/webhook-endpoints", key_a, {"url": "https://93.184.216.34/in"})
    endpoint = hook.json()["endpoint"]["id"]
    customer = api.customer(key_a)
    api.item(key_a, "secret-article", 500_000)
    api.call("POST", f"/v1/customers/{customer}/top-ups", key_a, {"amount_micros": 5_000_000})
    plan = {"name": "Pro", "period": "monthly", "price_micros": 1_000_000}
    assert api.call("PUT", "/v1/plans/pro-a", key_a, plan).status_code == 200
    sub = api.call("POST", "/v1/subscriptions", key_a, {"customer": customer, "plan": "pro-a"})
    subscription = sub.json()["id"]
    assert (
        api.call("PUT", "/v1/meters/calls-a", key_a, {"unit_price_micros": 10}).status_code == 200
    )
    usage_body = {"customer": customer, "meter": "calls-a", "quantity": 3}
    usage = api.call("POST", "/v1/usage-events", key_a, usage_body).json()["id"]
    payee_body = {"name": "Ann", "currency": "USD", "destination_token": "ba_ann"}
    payee = api.call("POST", "/v1/payees", api.operator_key, payee_body).json()["id"]
    bought = api.call(
        "POST", "/v1/purchases", key_a, {"customer": customer, "item": "secret-article"}
    )
    purchase = bought.json()["id"]
    key_a_id = key_a.removeprefix("mp_sk_test_")[:16]
    deliveries = api.call("GET", f"/v1/webhook-endpoints/{endpoint}/deliveries", key_a).json()
    delivery = deliveries["data"][0]["id"]
    event = api.call("GET", "/v1/events", key_a).json()["data"][0]["id"]
    hooks = f"/v1/webhook-endpoints/{endpoint}"
    matrix = {
        ("GET", "/v1/customers/{customer_id}"): (f"/v1/customers/{customer}", None),
        ("POST", "/v1/customers/{customer_id}/top-ups"): (
            f"/v1/customers/{customer}/top-ups",
            {"amount_micros": 5_000_000},
        ),
        ("GET", "/v1/items/{item_ref}"): ("/v1/items/secret-article", None),
        ("PUT", "/v1/items/{item_ref}"): ("", None),  # per-merchant names: checked below
        ("GET", "/v1/purchases/{purchase_id}"): (f"/v1/purchases/{purchase}", None),
        ("POST", "/v1/purchases/{purchase_id}/refunds"): (
            f"/v1/purchases/{purchase}/refunds",
            {"amount_micros": 100_000},
        ),
        ("POST", "/v1/keys/{key_id}/revoke"): (f"/v1/keys/{key_a_id}/revoke", None),
        ("POST", "/v1/purchases"): (
            "/v1/purchases",
            {"customer": customer, "item": "secret-article"},
        ),
        ("GET", "/v1/entitlements"): (
            f"/v1/entitlements?customer={customer}&item=secret-article",
            None,
        ),
        ("GET", "/v1/customers"): (f"/v1/customers?cursor={customer}", None),
        ("GET", "/v1/purchases"): (f"/v1/purchases?cursor={purchase}", None),
        ("GET", "/v1/webhook-endpoints/{endpoint_id}"): (hooks, None),
        ("DELETE", "/v1/webhook-endpoints/{endpoint_id}"): (hooks, None),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/disable"): (f"{hooks}/disable", None),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/enable"): (f"{hooks}/enable", None),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/rotate-secret"): (
            f"{hooks}/rotate-secret",
            None,
        ),
        ("GET", "/v1/webhook-endpoints/{endpoint_id}/deliveries"): (f"{hooks}/deliveries", None),
        ("POST", "/v1/webhook-endpoints/{endpoint_id}/deliveries/{delivery_id}/replay"): (
            f"{hooks}/deliveries/{delivery}/replay",
            None,
        ),
        ("GET", "/v1/events/{event_id}"): (f"/v1/events/{event}", None),
        ("GET", "/v1/events"): (f"/v1/events?cursor={event}", None),
        ("GET", "/v1/customers/{customer_id}/tab"): (f"/v1/customers/{customer}/tab", None),
        ("POST", "/v1/customers/{customer_id}/tab/settle"): (
            f"/v1/customers/{customer}/tab/settle",
            None,
        ),
        ("GET", "/v1/plans/{plan_ref}"): ("/v1/plans/pro-a", None),
        ("PUT", "/v1/plans/{plan_ref}"): ("", None),  # per-merchant names, like items
        ("GET", "/v1/subscriptions/{subscription_id}"): (f"/v1/subscriptions/{subscription}", None),
        ("POST", "/v1/subscriptions/{subscription_id}/cancel"): (
            f"/v1/subscriptions/{subscription}/cancel",
            {"at_period_end": False},
        ),
        ("POST", "/v1/subscriptions"): (
            "/v1/subscriptions",
            {"customer": customer, "plan": "pro-a"},
        ),
        ("GET", "/v1/meters/{meter}"): ("/v1/meters/calls-a", None),
        ("PUT", "/v1/meters/{meter}"): ("", None),  # per-merchant names, like items
        ("POST", "/v1/usage-events"): ("/v1/usage-events", usage_body),
        ("GET", "/v1/usage-events"): (f"/v1/usage-events?cursor={usage}", None),
        ("GET", "/v1/usage-events?customer"): (f"/v1/usage-events?customer={customer}", None),
        ("POST", "/v1/customers/{customer_id}/payment-method"): (
            f"/v1/customers/{customer}/payment-method",
            {"payment_method_token": "pm_from_b"},
        ),
        ("DELETE", "/v1/customers/{customer_id}/payment-method"): (
            f"/v1/customers/{customer}/payment-method",
            None,
        ),
        ("POST", "/v1/customers/{customer_id}/gift-card-redemptions"): (
            f"/v1/customers/{customer}/gift-card-redemptions",
            {"code": "ABCD-EFGH-JKMN-PQRS"},
        ),
        # Payees are the platform's: every merchant key gets 403 (test_api_payouts).
        ("GET", "/v1/payees/{payee_id}"): ("", None),
        ("GET", "/v1/payees/{payee_id}/balances"): ("", None),
        ("GET", "/v1/payees/{payee_id}/payouts"): ("", None),
        ("GET", "/v1/merchants/{merchant_id}/platform-fee"): ("", None),  # operator only
        ("PUT", "/v1/merchants/{merchant_id}/platform-fee"): ("", None),  # operator only
        ("GET", "/v1/items/{item_ref}/split"): ("/v1/items/only-at-a/split", None),
        ("PUT", "/v1/items/{item_ref}/split"): (
            "/v1/items/only-at-a/split",
            {"shares": [{"payee": payee, "share_bps": 10_000}]},
        ),
    }
    spec = api.client.get("/openapi.json").json()
    with_ids = {
        (method.upper(), path)
        for path, ops in spec["paths"].items()
        for method in ops
        if "{" in path
    }
    assert with_ids <= set(matrix), f"add these endpoints to the matrix: {with_ids - set(matrix)}"
    # Items are named per merchant: B's PUT makes B's own item, A's stays as it was.
    put = api.call("PUT", "/v1/items/secret-article", key_b, {"name": "B's", "price_micros": 1})
    assert put.status_code == 200
    assert api.call("GET", "/v1/items/secret-article", key_a).json()["price_micros"] == 500_000
    api.item(key_a, "only-at-a")
    for (method, _), (path, body) in matrix.items():
        if not path:
            continue
        target = "/v1/items/only-at-a" if path == "/v1/items/secret-article" else path
        r = api.call(method, target, key_b, body)
        assert r.status_code == 404, (method, path, r.text)
        assert set(r.json()["error"]) == {"code", "message", "request_id"}
    # Nothing of A's changed: still one purchase, not refunded, the key still works.
    mine = api.call("GET", f"/v1/purchases/{purchase}", key_a)
    assert mine.status_code == 200
    # the article, and the first period of the subscription
    assert len(api.call("GET", "/v1/purchases", key_a).json()["data"]) == 2
    assert api.call("GET", "/v1/purchases", key_b).json()["data"] == []
    assert api.call("GET", hooks, key_a).json()["enabled"] is True
    assert api.call("GET", f"{hooks}/deliveries", key_a).json() == deliveries
    assert api.call("GET", "/v1/webhook-endpoints", key_b).json()["data"] == []
    assert api.call("GET", "/v1/events", key_b).json()["data"] == []
    assert api.call("GET", f"/v1/subscriptions/{subscription}", key_a).json()["state"] == "active"
    assert api.call("GET", "/v1/usage-events", key_b).json()["data"] == []
    assert len(api.call("GET", "/v1/usage-events", key_a).json()["data"]) == 1
    assert api.call("GET", f"/v1/customers/{customer}", key_a).json()["has_payment_method"]


# --- idempotency --------------------------------------------------------------------------


def test_same_key_same_body_replays_byte_for_byte_and_changed_body_is_409(api: Api) -> None:
    _, key = api.merchant()
    first = api.call("POST", "/v1/customers", key, {"payment_method_token": "pm_a"}, idem="c-1")
    again = api.call("POST", "/v1/customers", key, {"payment_method_token": "pm_a"}, idem="c-1")
    assert first.status_code == again.status_code == 201
    assert again.content == first.content
    assert again.headers["idempotent-replayed"] == "true"
    changed = api.call("POST", "/v1/customers", key, {"payment_method_token": "pm_b"}, idem="c-1")
    assert changed.status_code == 409
    assert changed.json()["error"]["code"] == "idempotency_key_reused"
    assert len(api.call("GET", "/v1/customers", key).json()["data"]) == 1


def test_a_new_key_is_shown_once_even_to_a_replay(api: Api, database_url: str) -> None:
    _, key = api.merchant()
    first = api.call("POST", "/v1/keys", key, {"kind": "publishable"}, idem="k-1")
    again = api.call("POST", "/v1/keys", key, {"kind": "publishable"}, idem="k-1")
    assert first.json()["token"].startswith("mp_pk_test_")
    assert again.json() == {**first.json(), "token": None}
    assert first.json()["token"] not in _write(database_url, _dump_tables)


def test_two_merchants_may_use_the_same_key(api: Api) -> None:
    _, key_a = api.merchant("A")
    _, key_b = api.merchant("B")
    a = api.call("POST", "/v1/customers", key_a, {}, idem="shared")
    b = api.call("POST", "/v1/customers", key_b, {}, idem="shared")
    assert a.status_code == b.status_code == 201
    assert a.json()["id"] != b.json()["id"]
    assert api.call("GET", f"/v1/customers/{a.json()['id']}", key_b).status_code == 404


def test_a_refusal_is_remembered_for_its_key(api: Api) -> None:
    _, key = api.merchant(funding=["wallet"])
    customer = api.customer(key)
    api.item(key, "a", 300_000)
    body = {"customer": customer, "item": "a"}
    refused = api.call("POST", "/v1/purchases", key, body, idem="p-1")
    assert refused.status_code == 402
    api.call("POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 5_000_000})
    replay = api.call("POST", "/v1/purchases", key, body, idem="p-1")
    assert (replay.status_code, replay.content) == (402, refused.content)
    assert api.call("POST", "/v1/purchases", key, body, idem="p-2").status_code == 201


def test_in_progress_is_409_until_it_expires(api: Api, database_url: str, clock: FakeClock) -> None:
    public_id, key = api.merchant()
    owner = f"m:{_merchant_id(database_url, public_id)}"
    fingerprint = _fingerprint("/v1/customers", CustomerCreate())
    _write(
        database_url,
        lambda tx: api_tx(tx).start_idempotency(owner, "crashed", fingerprint, clock()),
    )
    busy = api.call("POST", "/v1/customers", key, {}, idem="crashed")
    assert busy.status_code == 409
    assert busy.json()["error"]["code"] == "idempotency_request_in_progress"
    clock.advance(61)  # past the in-progress timeout: the dead request's row is taken over
    done = api.call("POST", "/v1/customers", key, {}, idem="crashed")
    assert done.status_code == 201, done.text
    assert api.call("POST", "/v1/customers", key, {}, idem="crashed").content == done.content


def test_concurrent_identical_purchases_charge_once(api: Api, database_url: str) -> None:
    _, key = api.merchant(funding=["wallet"])
    customer = api.customer(key)
    api.item(key, "a", 300_000)
    api.call("POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 5_000_000})
    body = {"customer": customer, "item": "a"}
    start = threading.Barrier(12, timeout=30)
    results: list[Any] = []
    lock = threading.Lock()

    def buy() -> None:
        start.wait()
        r = api.call("POST", "/v1/purchases", key, body, idem="race")
        with lock:
            results.append(r)

    threads = [threading.Thread(target=buy) for _ in range(12)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert len(results) == 12
    ok = [r for r in results if r.status_code == 201]
    assert ok
    assert all(r.content == ok[0].content for r in ok)
    assert all(
        r.status_code == 201 or r.json()["error"]["code"] == "idempotency_request_in_progress"
        for r in results
    )
    assert len(api.call("GET", "/v1/purchases", key).json()["data"]) == 1
    store = open_store(database_url)
    try:
        assert reconcile(store).ok
    finally:
        store.close()


def test_post_without_idempotency_key_is_refused(api: Api) -> None:
    _, key = api.merchant()
    r = api.client.post("/v1/customers", json={}, headers={"Authorization": f"Bearer {key}"})
    assert r.status_code == 422
    assert r.json()["error"]["code"] == "validation_failed"
    assert "Idempotency-Key" in r.json()["error"]["message"]


# --- keys and modes -------------------------------------------------------------------------


def test_keys_are_stored_hashed_and_have_enough_entropy(api: Api, database_url: str) -> None:
    public_id, key = api.merchant()
    assert re.fullmatch(r"mp_sk_test_[0-9a-f]{64}", key)
    merchant_id = _merchant_id(database_url, public_id)
    rows = _write(database_url, lambda tx: api_tx(tx).list_api_keys(merchant_id))
    assert [r.secret_sha256 for r in rows] == [api_keys.digest(key)]
    assert all(key not in repr(r) for r in rows)
    bad = key[:-1] + ("0" if key[-1] != "0" else "1")  # same lookup, wrong secret
    r = api.call("GET", "/v1/customers", bad)
    assert r.status_code == 401
    assert r.json()["error"]["code"] == "api_key_invalid"
    for header in ("Bearer", "Basic abc", f"Token {key}", "Bearer mp_sk_test_zz"):
        r = api.client.get("/v1/customers", headers={"Authorization": header})
        assert r.status_code == 401, header


def test_a_test_key_is_refused_on_live_data(api: Api, database_url: str) -> None:
    public_id, live_key = api.merchant("Live Co", mode="live")
    assert live_key.startswith("mp_sk_live_")
    with pytest.raises(KeyAdminError):
        create_key(database_url, "secret", "test", public_id)
    new = api_keys.generate("secret", "test")  # forced into the table: auth must still refuse
    merchant_id = _merchant_id(database_url, public_id)
    row = ApiKeyRow(new.parsed.lookup, new.secret_sha256, "secret", "test", merchant_id, 1, None)
    _write(database_url, lambda tx: api_tx(tx).insert_api_key(row))
    r = api.call("GET", "/v1/customers", new.token)
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "mode_mismatch"
    assert api.call("GET", "/v1/customers", live_key).status_code == 200


# --- limits ------------------------------------------------------------------------------------


def test_rate_limit_answers_429_with_retry_after(database_url: str, clock: FakeClock) -> None:
    with running_api(database_url, clock, rate_per_s=0.01, rate_burst=3) as api:
        operator_calls = 1  # the merchant creation below spends one of the operator's tokens
        _, key = api.merchant()
        answers = [api.call("GET", "/v1/customers", key).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = api.call("GET", "/v1/customers", key)
        assert limited.json()["error"]["code"] == "rate_limited"
        assert int(limited.headers["retry-after"]) >= 1
        assert operator_calls == 1
        assert api.call("GET", "/v1/keys", key).status_code == 429


def test_huge_body_is_413(api: Api) -> None:
    _, key = api.merchant()
    r = api.call("POST", "/v1/customers", key, {"payment_method_token": "x" * 100_000})
    assert r.status_code == 413
    assert r.json()["error"]["code"] == "body_too_large"
    assert api.call("GET", "/v1/customers", key).json()["data"] == []


# --- bad input, and what reaches the logs ------------------------------------------------------


@pytest.mark.parametrize(
    "amount",
    [1.0, 1.5, "5000000", True, 0, -5_000_000, 2**70, None, [5_000_000], {"v": 1}],
)
def test_amounts_must_be_integer_micros(api: Api, amount: Any) -> None:
    _, key = api.merchant()
    customer = api.customer(key)
    r = api.call("POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": amount})
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "validation_failed"


def test_malformed_json_and_unknown_fields(api: Api) -> None:
    _, key = api.merchant()
    headers = {
        "Authorization": f"Bearer {key}",
        "Idempotency-Key": "k",
        "Content-Type": "application/json",
    }
    for raw in (b"{", b"[1,", b"\xff\xfe", b'{"payment_method_token": NaN}'):
        r = api.client.post("/v1/customers", content=raw, headers=headers)
        assert r.status_code in (400, 422), raw
        assert "Traceback" not in r.text
        assert set(r.json()) == {"error"}
    r = api.call("POST", "/v1/customers", key, {"tab_limit_micros": 10**12})
    assert r.status_code == 422
    assert "extra_forbidden" in r.json()["error"]["message"]
    assert api.call("GET", "/v1/customers", key).json()["data"] == []


def test_card_numbers_are_refused_and_never_logged(
    api: Api, database_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    _, key = api.merchant()
    refused = api.call("POST", "/v1/customers", key, {"payment_method_token": CARD})
    assert refused.status_code == 422
    spaced = api.call("POST", "/v1/customers", key, {"payment_method_token": "4242-4242-4242-4242"})
    assert spaced.status_code == 422
    api.call("GET", f"/v1/customers/{CARD}", key)
    api.call("GET", f"/v1/items/{CARD}", key)
    api.call("POST", "/v1/purchases", key, {"customer": CARD, "item": CARD, CARD: CARD}, idem=CARD)
    api.client.get(f"/v1/customers?cursor={CARD}", headers={"Authorization": f"Bearer {CARD}"})
    api.client.get("/v1/customers", headers={"Authorization": f"Bearer {key}x"})
    # The server's logs (the test client's own httpx log of its URLs is not the server's).
    server_log = "\n".join(
        f"{r.name} {r.getMessage()} {r.exc_text or ''}"
        for r in caplog.records
        if not r.name.startswith(("httpx", "httpcore"))
    )
    responses_and_logs = server_log + refused.text + spaced.text
    assert CARD not in responses_and_logs
    assert "4242-4242" not in responses_and_logs
    assert "mp_sk_" not in server_log
    assert "mp_op_" not in server_log
    assert "request req_" in server_log  # the access log did run
    dump = _write(database_url, _dump_tables)
    assert CARD not in dump, dump
    assert key not in dump
    assert api.operator_key not in dump


def _dump_tables(tx: Any) -> str:
    out = []
    for table in ("customers", "api_keys", "api_idempotency", "purchases", "items"):
        tx._cur.execute(f"SELECT * FROM {table}")
        out.append(repr(tx._cur.fetchall()))
    return "\n".join(out)


def test_no_endpoint_answers_without_credentials(api: Api) -> None:
    _, key = api.merchant()
    customer = api.customer(key)
    spec = api.client.get("/openapi.json").json()
    public = {"/healthz", "/readyz"}
    samples = {
        "{customer_id}": customer,
        "{item_ref}": "a",
        "{purchase_id}": "pur_1",
        "{key_id}": "0123456789abcdef",
    }
    checked = 0
    for path, operations in spec["paths"].items():
        if path in public:
            continue
        concrete = path
        for name, value in samples.items():
            concrete = concrete.replace(name, value)
        for method in operations:
            for header in (None, "Bearer mp_sk_test_" + "0" * 64, "Bearer nonsense"):
                headers = {"Idempotency-Key": "k"} | ({"Authorization": header} if header else {})
                r = api.client.request(method.upper(), concrete, json={}, headers=headers)
                assert r.status_code == 401, (method, path, header, r.text)
                checked += 1
    assert checked >= 3 * 14


def test_the_signing_key_survives_a_restart(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Tokens signed before a restart still verify after it: the key is kept, not regenerated."""
    import os as _os

    from micropay.cli.api_cmd import load_or_create_signer

    path = tmp_path / "signing.pem"
    first = load_or_create_signer(path)
    assert _os.stat(path).st_mode & 0o777 == 0o600
    again = load_or_create_signer(path)
    assert again.public_key_pem() == first.public_key_pem()
    assert again.key_id == first.key_id
    other = load_or_create_signer(tmp_path / "other.pem")
    assert other.public_key_pem() != first.public_key_pem()  # control: a new file, a new key
