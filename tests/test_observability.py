"""Operations: /metrics moves with real requests; JSON logs carry request ids and no secrets."""

from __future__ import annotations

import io
import json
import logging
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from fastapi import Request
from fastapi.testclient import TestClient
from prometheus_client.parser import text_string_to_metric_families
from pythonjsonlogger.json import JsonFormatter

from conftest import FakeClock
from micropay.api import ApiConfig, create_app
from micropay.api.admin import create_key
from micropay.api.observability import Metrics, count_deliveries, json_handler
from micropay.processors.simulated import SimulatedProcessor
from micropay.webhooks.delivery import DeliveryOutcome

# What a leak looks like: a whole API key, or 16 digits in a row (optionally grouped).
KEY_PATTERN = re.compile(r"mp_(?:sk|pk|op)_(?:test|live)_[0-9a-f]{64}")
CARD_PATTERN = re.compile(r"(?<!\d)(?:\d{4}[ -]?){3}\d{4}(?!\d)")
CARD = "4242 4242 4242 4242"


def leaks(text: str) -> list[str]:
    return KEY_PATTERN.findall(text) + CARD_PATTERN.findall(text)


class Client:
    def __init__(self, client: TestClient, operator_key: str) -> None:
        self.client = client
        self.operator_key = operator_key

    def call(self, method: str, path: str, key: str | None, body: Any = None, **kw: Any) -> Any:
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        if method == "POST":
            headers["Idempotency-Key"] = kw.pop("idem", None) or uuid.uuid4().hex
        return self.client.request(method, path, json=body, headers=headers)

    def samples(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        r = self.call("GET", "/metrics", self.operator_key)
        assert r.status_code == 200, r.text
        assert r.headers["content-type"].startswith("text/plain")
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(r.text)
            for s in family.samples
        }


def value(samples: dict[Any, float], name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


@pytest.fixture
def logs() -> Iterator[tuple[io.StringIO, io.StringIO]]:
    """(redacted JSON lines, the same records unredacted: the negative control)."""
    raw, redacted = io.StringIO(), io.StringIO()
    raw_handler = logging.StreamHandler(raw)
    raw_handler.setFormatter(JsonFormatter("{levelname}{name}{message}", style="{"))
    handler = json_handler(redacted)
    logger = logging.getLogger("micropay")
    old_level = logger.level
    logger.setLevel(logging.INFO)
    # The raw handler first: the redacting filter rewrites the record for those after it.
    logger.addHandler(raw_handler)
    logger.addHandler(handler)
    try:
        yield redacted, raw
    finally:
        logger.removeHandler(handler)
        logger.removeHandler(raw_handler)
        logger.setLevel(old_level)


@pytest.fixture
def api(database_url: str, clock: FakeClock) -> Iterator[Client]:
    operator_key = create_key(database_url, "operator", "test")
    app = create_app(ApiConfig(database_url, processor=SimulatedProcessor(), clock=clock))
    app.state.runtime.ledger_collector.every_s = 0.0  # read the journal at every scrape

    @app.post("/test-only/careless-echo")
    async def careless_echo(request: Request) -> dict[str, str]:
        # Code that logs user input as is, in the server's threadpool like the endpoints.
        text = (await request.body()).decode()
        logging.getLogger("micropay.api.careless").info("echo %s", text)
        return {"ok": "yes"}

    with TestClient(app, raise_server_exceptions=False) as client:
        yield Client(client, operator_key)


def test_metrics_follow_purchases_charges_and_requests(api: Client) -> None:
    merchant = api.call(
        "POST", "/v1/merchants", api.operator_key, {"name": "M", "currency": "USD", "mode": "test"}
    )
    assert merchant.status_code == 201, merchant.text
    key = merchant.json()["secret_key"]["token"]
    item = api.call("PUT", "/v1/items/article-1", key, {"name": "A", "price_micros": 600_000})
    assert item.status_code == 200
    wallet = api.call("POST", "/v1/customers", key, {"payment_method_token": "pm_card_ok"}).json()
    tab = api.call("POST", "/v1/customers", key, {"payment_method_token": "pm_card_ok"}).json()
    before = api.samples()

    topped = api.call(
        "POST", f"/v1/customers/{wallet['id']}/top-ups", key, {"amount_micros": 10_000_000}
    )
    assert topped.status_code == 201, topped.text
    body = {"customer": wallet["id"], "item": "article-1"}
    bought = api.call("POST", "/v1/purchases", key, body, idem="buy-1")
    assert bought.status_code == 201, bought.text
    replay = api.call("POST", "/v1/purchases", key, body, idem="buy-1")
    assert replay.headers.get("idempotent-replayed") == "true"
    missing = api.call("POST", "/v1/purchases", key, {"customer": wallet["id"], "item": "nope"})
    assert missing.status_code == 404
    # The tab customer: 0.60 on the tab, then a second item passes the 1.00 limit and
    # the tab settles in one card charge before the purchase goes through.
    api.call("PUT", "/v1/items/article-2", key, {"name": "B", "price_micros": 600_000})
    for ref in ("article-1", "article-2"):
        r = api.call("POST", "/v1/purchases", key, {"customer": tab["id"], "item": ref})
        assert r.status_code == 201, r.text
    after = api.samples()

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("micropay_purchases_total", outcome="ok") == 3  # the replay is not counted
    assert moved("micropay_purchases_total", outcome="item_not_found") == 1
    assert moved("micropay_sales_total", funding="wallet") == 1
    assert moved("micropay_sales_total", funding="tab") == 2
    assert moved("micropay_charges_total", purpose="topup", outcome="succeeded") == 1
    assert moved("micropay_charges_total", purpose="tab", outcome="succeeded") == 1
    assert moved("micropay_tab_settlements_total", outcome="succeeded") == 1
    # purchase, top-up, tab purchases and the settlement all wrote transfers
    assert moved("micropay_ledger_transfers") >= 5
    assert (
        moved(
            "micropay_http_request_duration_seconds_count",
            method="POST",
            route="/v1/purchases",
            status="201",
        )
        == 4
    )


def test_metrics_need_the_operator_key_and_stay_out_of_the_schema(api: Client) -> None:
    assert api.call("GET", "/metrics", None).status_code == 401
    merchant = api.call(
        "POST", "/v1/merchants", api.operator_key, {"name": "M", "currency": "USD", "mode": "test"}
    ).json()
    assert api.call("GET", "/metrics", merchant["secret_key"]["token"]).status_code == 403
    assert "/metrics" not in api.call("GET", "/openapi.json", None).json()["paths"]
    samples = api.samples()
    assert value(samples, "micropay_ledger_transfers") >= 0


def test_logs_are_json_with_request_ids_and_no_keys_or_card_numbers(
    api: Client, logs: tuple[io.StringIO, io.StringIO]
) -> None:
    redacted, raw = logs
    merchant = api.call(
        "POST", "/v1/merchants", api.operator_key, {"name": "M", "currency": "USD", "mode": "test"}
    ).json()
    secret = merchant["secret_key"]["token"]
    created = api.call("POST", "/v1/keys", secret, {"kind": "publishable"})
    assert created.status_code == 201, created.text
    publishable = created.json()["token"]
    card_customer = api.call(
        "POST", "/v1/customers", secret, {"payment_method_token": CARD.replace(" ", "")}
    )
    # A raw card number is not a processor token: refused, and not echoed back.
    assert card_customer.status_code == 422
    assert leaks(card_customer.text) == []
    bad = api.call("PUT", "/v1/items/x", secret, {"name": CARD, "price_micros": -1})
    assert bad.status_code == 422
    assert api.call("GET", f"/v1/customers/{secret}", secret).status_code in (404, 422)
    echoed = api.call(
        "POST", "/test-only/careless-echo", None, {"card": CARD, "keys": [secret, publishable]}
    )
    assert echoed.status_code == 200

    lines = [json.loads(line) for line in redacted.getvalue().splitlines()]
    requests = [line for line in lines if line.get("route")]
    assert len(requests) >= 6
    for line in requests:
        assert re.fullmatch(r"req_[0-9a-f]{16}", line["request_id"]), line
        assert {"time", "level", "logger", "message", "method", "status"} <= set(line)
    echo = [line for line in lines if line["logger"] == "micropay.api.careless"]
    assert len(echo) == 1
    # Logged from the threadpool inside the request: it carries that request's id.
    echo_request = [r for r in requests if r["route"] == "/test-only/careless-echo"]
    assert echo[0]["request_id"] == echo_request[0]["request_id"]
    assert "[redacted-key]" in echo[0]["message"]
    assert "[redacted]" in echo[0]["message"]
    assert leaks(redacted.getvalue()) == []
    # Negative control: the same records without the redacting filter do leak, so the
    # detector above can fail.
    found = leaks(raw.getvalue())
    assert secret in found
    assert publishable in found
    assert CARD in found


def test_delivery_outcomes_are_counted_by_state() -> None:
    metrics = Metrics()
    count_deliveries(
        metrics,
        [
            DeliveryOutcome(1, "msg_a", "succeeded", 200, ""),
            DeliveryOutcome(2, "msg_b", "pending", 500, "server error"),
            DeliveryOutcome(3, "msg_c", "succeeded", 204, ""),
        ],
    )
    text = metrics.exposition()[0].decode()
    assert 'micropay_webhook_deliveries_total{state="succeeded"} 2.0' in text
    assert 'micropay_webhook_deliveries_total{state="pending"} 1.0' in text


def test_a_request_id_made_of_digits_survives_while_a_card_next_to_it_does_not() -> None:
    out = io.StringIO()
    handler = json_handler(out)
    logger = logging.getLogger("micropay.test.digits")
    logger.propagate = False
    logger.addHandler(handler)
    try:
        request_id = "req_1234567890123456"  # hex that happens to be all digits
        logger.warning(
            "request %s paid with %s", request_id, CARD, extra={"request_id": request_id}
        )
        logger.warning("no id here %s", "req_notanid " + CARD, extra={"request_id": CARD})
    finally:
        logger.removeHandler(handler)
    first, second = (json.loads(line) for line in out.getvalue().splitlines())
    assert first["message"] == f"request {request_id} paid with [redacted]"
    assert first["request_id"] == request_id
    assert leaks(out.getvalue().replace(request_id, "req_id")) == []
    assert second["request_id"] == "[redacted]"
