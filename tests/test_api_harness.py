"""Shared by the API tests (no tests here): an app over a fresh store and an operator key."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from fastapi.testclient import TestClient

from micropay.api import ApiConfig, create_app
from micropay.api.admin import create_key
from micropay.processors.simulated import SimulatedProcessor


class Api:
    def __init__(self, client: TestClient, operator_key: str) -> None:
        self.client = client
        self.operator_key = operator_key

    def call(
        self,
        method: str,
        path: str,
        key: str | None,
        body: Any = None,
        *,
        idem: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        sent = dict(headers or {})
        if key is not None:
            sent["Authorization"] = f"Bearer {key}"
        if method == "POST" and idem is not False:
            sent.setdefault("Idempotency-Key", idem or uuid.uuid4().hex)
        return self.client.request(method, path, json=body, headers=sent)

    def merchant(
        self, name: str = "Daily Planet", mode: str = "test", funding: list[str] | None = None
    ) -> tuple[str, str]:
        body: dict[str, Any] = {"name": name, "currency": "USD", "mode": mode}
        if funding is not None:
            body["funding_policy"] = funding
        r = self.call("POST", "/v1/merchants", self.operator_key, body)
        assert r.status_code == 201, r.text
        body = r.json()
        return body["merchant"]["id"], body["secret_key"]["token"]

    def customer(self, key: str, payment_method: str = "pm_card_ok") -> str:
        r = self.call("POST", "/v1/customers", key, {"payment_method_token": payment_method})
        assert r.status_code == 201, r.text
        return str(r.json()["id"])

    def item(self, key: str, ref: str = "article-1", price_micros: int = 250_000) -> None:
        r = self.call("PUT", f"/v1/items/{ref}", key, {"name": ref, "price_micros": price_micros})
        assert r.status_code == 200, r.text


@contextmanager
def running_api(database_url: str, clock: Callable[[], int], **config: Any) -> Iterator[Api]:
    operator_key = create_key(database_url, "operator", "live")
    app = create_app(ApiConfig(database_url, processor=SimulatedProcessor(), clock=clock, **config))
    with TestClient(app, raise_server_exceptions=False) as client:
        yield Api(client, operator_key)
