"""Webhooks in: signed processor events over HTTP, applied to the payment models once."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient

from micropay.api import ApiConfig, create_app
from micropay.api.admin import create_key
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from test_api_harness import Api


def test_a_dispute_arrives_signed_and_applies_once(database_url, clock) -> None:  # type: ignore[no-untyped-def]
    processor = SimulatedProcessor()
    operator = create_key(database_url, "operator", "live")
    app = create_app(ApiConfig(database_url, processor=processor, clock=clock))
    with TestClient(app, raise_server_exceptions=False) as client:
        api = Api(client, operator)
        _, key = api.merchant(funding=["direct"])
        customer = api.customer(key)
        api.item(key, "textbook", 20_000_000)
        bought = api.call("POST", "/v1/purchases", key, {"customer": customer, "item": "textbook"})
        assert bought.status_code == 201, bought.text
        assert bought.json()["funding"] == "direct"
        [charge_id] = processor.succeeded_charges()
        now_s = clock.now_us // 1_000_000
        payload = json.dumps(
            {
                "id": "evt_dispute_1",
                "kind": "dispute_created",
                "object_id": "dp_1",
                "charge_id": charge_id,
                "amount_minor": 2000,
                "currency": "USD",
            }
        ).encode()
        signature = processor.sign_event(payload, now_s)

        def deliver(body: bytes, header: str | None) -> object:
            headers = {"Content-Type": "application/json"}
            if header is not None:
                headers["Stripe-Signature"] = header
            return client.post("/v1/processor-events", content=body, headers=headers)

        assert deliver(payload, None).status_code == 401  # type: ignore[attr-defined]
        tampered = payload.replace(b"2000", b"9000")
        refused = deliver(tampered, signature)
        assert refused.status_code == 401  # type: ignore[attr-defined]
        assert refused.json()["error"]["code"] == "event_signature_invalid"  # type: ignore[attr-defined]
        stale = deliver(payload, processor.sign_event(payload, now_s - 3_600))
        assert stale.status_code == 401  # type: ignore[attr-defined]
        access = api.call("GET", f"/v1/entitlements?customer={customer}&item=textbook", key)
        assert access.json()["active"] is True  # nothing above changed anything

        first = deliver(payload, signature)
        assert first.status_code == 200, first.text  # type: ignore[attr-defined]
        assert first.json()["effect"] == "dispute_opened"  # type: ignore[attr-defined]
        again = deliver(payload, signature)
        assert again.json()["replayed"] is True  # type: ignore[attr-defined]
        access = api.call("GET", f"/v1/entitlements?customer={customer}&item=textbook", key)
        assert access.json()["active"] is False  # the disputed purchase no longer grants access
    store = open_store(database_url)
    try:
        report = reconcile(store)
        assert report.ok, report.violations
    finally:
        store.close()
