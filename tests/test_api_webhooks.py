"""``/v1/webhook-endpoints`` and ``/v1/events`` over HTTP, on SQLite and PostgreSQL.

Deliveries go to a real HTTP receiver on 127.0.0.1 (test mode, with the
server's switch for private addresses) and every body is verified with the
Standard Webhooks reference library.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, get_args

import pytest

from conftest import FakeClock
from micropay.api.schemas_webhooks import EventType
from micropay.store import open_store
from micropay.webhooks import EVENT_TYPES, Webhooks
from test_api_harness import Api, running_api
from test_webhooks import Receiver, receiver, verified_ids

__all__ = ["receiver"]  # the fixture, shared with test_webhooks
PUBLIC = "93.184.216.34"


def _public(host: str, port: int) -> list[str]:
    return [PUBLIC] if host == "hooks.example" else []


@pytest.fixture
def api(database_url: str, clock: FakeClock) -> Iterator[Api]:
    with running_api(
        database_url, clock, webhook_resolver=_public, webhook_allow_private_in_test=True
    ) as running:
        yield running


def _drain(database_url: str, clock: FakeClock) -> list[Any]:
    store = open_store(database_url)
    try:
        return Webhooks(store, clock=clock, allow_private_in_test=True).drain()
    finally:
        store.close()


def _sale(api: Api, key: str, clock: FakeClock) -> tuple[str, str]:
    customer = api.customer(key)
    api.item(key, "a", 250_000)
    top = api.call("POST", f"/v1/customers/{customer}/top-ups", key, {"amount_micros": 5_000_000})
    assert top.status_code == 201, top.text
    clock.advance(1)  # events are listed by time, then id
    bought = api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "a"})
    assert bought.status_code == 201, bought.text
    return customer, str(bought.json()["id"])


def test_event_types_in_the_schema_are_the_outbox_types() -> None:
    assert set(get_args(EventType)) == set(EVENT_TYPES)


def test_create_shows_the_secret_once_and_replays_without_it(api: Api) -> None:
    _, key = api.merchant()
    body = {"url": "https://hooks.example/in", "events": ["purchase.succeeded"]}
    first = api.call("POST", "/v1/webhook-endpoints", key, body, idem="we-1")
    assert first.status_code == 201, first.text
    created = first.json()
    assert created["secret"].startswith("whsec_")
    endpoint = created["endpoint"]
    assert endpoint["id"].startswith("we_")
    assert (endpoint["mode"], endpoint["enabled"], endpoint["events"]) == (
        "test",
        True,
        ["purchase.succeeded"],
    )
    again = api.call("POST", "/v1/webhook-endpoints", key, body, idem="we-1")
    assert again.status_code == 201
    assert again.headers["Idempotent-Replayed"] == "true"
    assert again.json() == {**created, "secret": None}
    assert (
        again.content == api.call("POST", "/v1/webhook-endpoints", key, body, idem="we-1").content
    )
    listed = api.call("GET", "/v1/webhook-endpoints", key).json()
    assert [e["id"] for e in listed["data"]] == [endpoint["id"]]
    got = api.call("GET", f"/v1/webhook-endpoints/{endpoint['id']}", key)
    assert got.json() == endpoint
    assert "secret" not in got.json()


@pytest.mark.parametrize(
    ("url", "status", "code"),
    [
        ("http://169.254.169.254/latest/meta-data", 403, "url_refused"),  # cloud metadata
        ("http://10.0.0.8/", 403, "url_refused"),  # private, and no switch for it here
        ("https://nowhere.invalid/", 403, "url_refused"),  # does not resolve
        ("http://[::ffff:169.254.169.254]/", 422, "validation_failed"),  # host names, IPv4 only
        ("https://user:pw@hooks.example/", 422, "validation_failed"),
        ("ftp://hooks.example/", 422, "validation_failed"),
        ("https://hooks.example:99999/", 422, "validation_failed"),
    ],
)
def test_ssrf_refusals_write_nothing(
    database_url: str, clock: FakeClock, url: str, status: int, code: str
) -> None:
    with running_api(database_url, clock, webhook_resolver=_public) as api:
        _, key = api.merchant()
        r = api.call("POST", "/v1/webhook-endpoints", key, {"url": url})
        assert r.status_code == status, r.text
        assert r.json()["error"]["code"] == code
        assert api.call("GET", "/v1/webhook-endpoints", key).json()["data"] == []


def test_bad_bodies_are_422(api: Api) -> None:
    _, key = api.merchant()
    for body in (
        {"url": "https://hooks.example/", "events": ["purchase.made"]},
        {"url": "https://hooks.example/", "events": []},
        {"url": "https://hooks.example/", "secret": "whsec_mine"},
        {"url": "x" * 2_049},
    ):
        r = api.call("POST", "/v1/webhook-endpoints", key, body)
        assert r.status_code == 422, body
        assert r.json()["error"]["code"] == "validation_failed"
    assert api.call("GET", "/v1/webhook-endpoints", key).json()["data"] == []


def test_sixteen_endpoints_at_most(api: Api) -> None:
    _, key = api.merchant()
    for n in range(16):
        r = api.call("POST", "/v1/webhook-endpoints", key, {"url": f"https://hooks.example/{n}"})
        assert r.status_code == 201
    over = api.call("POST", "/v1/webhook-endpoints", key, {"url": "https://hooks.example/x"})
    assert (over.status_code, over.json()["error"]["code"]) == (409, "too_many_endpoints")
    assert len(api.call("GET", "/v1/webhook-endpoints", key).json()["data"]) == 16


def test_events_list_paginates_filters_and_is_scoped(api: Api, clock: FakeClock) -> None:
    _, key = api.merchant("A")
    _, other = api.merchant("B")
    customer, purchase = _sale(api, key, clock)
    everything = api.call("GET", "/v1/events", key).json()
    assert [e["type"] for e in everything["data"]] == ["topup.succeeded", "purchase.succeeded"]
    assert everything["has_more"] is False
    sale = everything["data"][1]
    assert sale["payload"]["data"]["customer"] == customer
    assert f"pur_{sale['payload']['data']['purchase_id']}" == purchase
    first = api.call("GET", "/v1/events?limit=1", key).json()
    assert (first["has_more"], first["next_cursor"]) == (True, everything["data"][0]["id"])
    rest = api.call("GET", f"/v1/events?limit=1&cursor={first['next_cursor']}", key).json()
    assert [e["id"] for e in rest["data"]] == [sale["id"]]
    assert rest["has_more"] is False
    only = api.call("GET", "/v1/events?type=purchase.succeeded", key).json()["data"]
    assert [e["id"] for e in only] == [sale["id"]]
    assert api.call("GET", f"/v1/events/{sale['id']}", key).json() == sale
    assert api.call("GET", "/v1/events", other).json()["data"] == []
    assert api.call("GET", f"/v1/events/{sale['id']}", other).status_code == 404
    assert api.call("GET", "/v1/events?type=sale.made", key).status_code == 422


def test_delivery_log_replay_rotate_disable_delete(
    api: Api, database_url: str, clock: FakeClock, receiver: tuple[Receiver, str]
) -> None:
    box, url = receiver
    _, key = api.merchant()
    made = api.call("POST", "/v1/webhook-endpoints", key, {"url": url}).json()
    endpoint, secret = made["endpoint"]["id"], made["secret"]
    _sale(api, key, clock)
    assert len(_drain(database_url, clock)) == 2
    assert len(verified_ids(box, secret)) == 2
    log = api.call("GET", f"/v1/webhook-endpoints/{endpoint}/deliveries", key).json()
    assert [d["state"] for d in log["data"]] == ["succeeded", "succeeded"]
    first = log["data"][0]
    assert [(a["attempt"], a["status_code"]) for a in first["log"]] == [(1, 200)]
    page = api.call("GET", f"/v1/webhook-endpoints/{endpoint}/deliveries?limit=1", key).json()
    assert (page["has_more"], page["next_cursor"]) == (True, first["id"])

    rotated = api.call("POST", f"/v1/webhook-endpoints/{endpoint}/rotate-secret", key, idem="r1")
    assert rotated.status_code == 200
    new_secret = rotated.json()["secret"]
    assert new_secret.startswith("whsec_")
    assert new_secret != secret
    replayed = api.call("POST", f"/v1/webhook-endpoints/{endpoint}/rotate-secret", key, idem="r1")
    assert replayed.json()["secret"] is None

    path = f"/v1/webhook-endpoints/{endpoint}/deliveries/{first['id']}/replay"
    again = api.call("POST", path, key)
    assert again.status_code == 200, again.text
    assert again.json()["state"] == "pending"
    busy = api.call("POST", path, key)
    assert (busy.status_code, busy.json()["error"]["code"]) == (409, "delivery_pending")
    assert len(_drain(database_url, clock)) == 1
    box.received[:2] = []  # signed with the old secret
    assert verified_ids(box, new_secret) == [first["event"]]  # same webhook-id again

    off = api.call("POST", f"/v1/webhook-endpoints/{endpoint}/disable", key)
    assert (off.json()["enabled"], off.json()["disabled_reason"]) == (False, "disabled")
    on = api.call("POST", f"/v1/webhook-endpoints/{endpoint}/enable", key)
    assert (on.json()["enabled"], on.json()["disabled_reason"]) == (True, None)
    gone = api.call("DELETE", f"/v1/webhook-endpoints/{endpoint}", key)
    assert gone.status_code == 200
    assert api.call("GET", f"/v1/webhook-endpoints/{endpoint}", key).status_code == 404
    assert api.call("GET", f"/v1/webhook-endpoints/{endpoint}/deliveries", key).status_code == 404
    assert api.call("DELETE", f"/v1/webhook-endpoints/{endpoint}", key).status_code == 404
    # Events stay in the outbox: deleting an endpoint deletes its log only.
    assert len(api.call("GET", "/v1/events", key).json()["data"]) == 2


def test_live_endpoints_need_https_and_a_public_address(api: Api) -> None:
    _, key = api.merchant("Live", mode="live")
    plain = api.call("POST", "/v1/webhook-endpoints", key, {"url": "http://hooks.example/"})
    assert (plain.status_code, plain.json()["error"]["code"]) == (422, "url_invalid")
    local = api.call("POST", "/v1/webhook-endpoints", key, {"url": "https://127.0.0.1/"})
    assert (local.status_code, local.json()["error"]["code"]) == (403, "url_refused")
    # (the test switch for private addresses never opens live mode)
    ok = api.call("POST", "/v1/webhook-endpoints", key, {"url": "https://hooks.example/"})
    assert ok.status_code == 201
    assert ok.json()["endpoint"]["mode"] == "live"
