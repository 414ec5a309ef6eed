"""The blocking client."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

import httpx

from micropay.client import _specs as specs
from micropay.client import models as m
from micropay.client._core import (
    DEFAULT_BASE_URL,
    Answer,
    Call,
    RetryPolicy,
    answer,
    connection_error,
    masked,
    post,
    retry_delay,
)
from micropay.client._sync_extra import ExtraMethods
from micropay.client.errors import MicropayError

T = TypeVar("T")
log = logging.getLogger("micropay.client")
pages_max = 1_000_000  # a bound on auto-pagination, far above any real listing


class Client(ExtraMethods):
    """``Client(api_key, base_url)``: the micropay API, typed, with safe automatic retries.

    ``transport`` (an ``httpx.BaseTransport``) lets tests or proxies plug in;
    ``sleep`` and ``rng`` make the back-off observable in tests.
    """

    def __init__(
        self,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.Client(base_url=base_url, timeout=timeout_s, transport=transport)

    def __repr__(self) -> str:
        return f"Client(base_url={self.base_url!r}, api_key={masked(self._api_key)})"

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    # --- plumbing ------------------------------------------------------------

    def _send(self, call: Call) -> Answer:
        headers = call.request_headers(self._api_key)
        content = call.content()
        attempt = 0
        while True:
            try:
                response = self._http.request(
                    call.method, call.path, params=call.params, content=content, headers=headers
                )
            except httpx.TransportError as error:
                delay = retry_delay(self.retry, attempt, self._rng, error=error)
                if delay is None:
                    raise connection_error(error, attempt + 1) from error
                why = type(error).__name__
            else:
                delay = retry_delay(self.retry, attempt, self._rng, response=response)
                if delay is None:
                    return answer(response)
                why = f"HTTP {response.status_code}"
            log.info("retry %s %s after %s in %.2fs", call.method, call.path, why, delay)
            self._sleep(delay)
            attempt += 1

    def _run(self, spec: specs.Spec[T]) -> T:
        call, parse = spec
        return parse(self._send(call))

    def _walk(self, page: Callable[[str | None], specs.Spec[specs.Page[T]]]) -> Iterator[T]:
        cursor: str | None = None
        for _ in range(pages_max):
            got = self._run(page(cursor))
            yield from got.data
            if not got.has_more:
                return
            if specs.stuck_cursor(cursor, got):
                raise MicropayError("invalid_cursor", "the server repeated a page cursor")
            cursor = got.next_cursor

    # --- operator ------------------------------------------------------------

    def create_merchant(
        self,
        name: str,
        currency: str,
        *,
        mode: str = "test",
        funding_policy: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> m.MerchantCreated:
        """Operator key only: a merchant and its first secret key (shown once)."""
        return self._run(
            specs.create_merchant(name, currency, mode, funding_policy, idempotency_key)
        )

    # --- keys ----------------------------------------------------------------

    def create_key(self, kind: str, *, idempotency_key: str | None = None) -> m.CreatedKey:
        return self._run(specs.create_key(kind, idempotency_key))

    def list_keys(self) -> list[m.ApiKey]:
        return self._run(specs.list_keys())

    def revoke_key(self, key_id: str, *, idempotency_key: str | None = None) -> m.ApiKey:
        return self._run(specs.revoke_key(key_id, idempotency_key))

    # --- customers and items -------------------------------------------------

    def create_customer(
        self,
        *,
        payment_method_token: str = "",
        processor_customer_token: str = "",
        idempotency_key: str | None = None,
    ) -> m.Customer:
        return self._run(
            specs.create_customer(payment_method_token, processor_customer_token, idempotency_key)
        )

    def get_customer(self, customer: str) -> m.Customer:
        return self._run(specs.get_customer(customer))

    def customers_page(
        self, cursor: str | None = None, limit: int | None = None
    ) -> specs.Page[m.Customer]:
        return self._run(specs.customers_page(cursor, limit))

    def list_customers(self, *, page_size: int | None = None) -> Iterator[m.Customer]:
        """Every customer, page after page (lazily)."""
        return self._walk(lambda cursor: specs.customers_page(cursor, page_size))

    def put_item(
        self,
        item_ref: str,
        name: str,
        price_micros: int,
        *,
        access_period_s: int = 0,
        consumable: bool = False,
    ) -> m.Item:
        return self._run(specs.put_item(item_ref, name, price_micros, access_period_s, consumable))

    def get_item(self, item_ref: str) -> m.Item:
        return self._run(specs.get_item(item_ref))

    # --- money ---------------------------------------------------------------

    def top_up(
        self, customer: str, amount_micros: int, *, idempotency_key: str | None = None
    ) -> m.TopUp:
        return self._run(specs.top_up(customer, amount_micros, idempotency_key))

    def purchase(
        self,
        customer: str,
        item: str,
        *,
        price_micros: int | None = None,
        currency: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.Purchase:
        """Buy ``item`` for ``customer``; refusals raise (402 :class:`PaymentRequiredError`...)."""
        return self._run(specs.purchase(customer, item, price_micros, currency, idempotency_key))

    def get_purchase(self, purchase_id: str) -> m.Purchase:
        return self._run(specs.get_purchase(purchase_id))

    def purchases_page(
        self, cursor: str | None = None, limit: int | None = None
    ) -> specs.Page[m.Purchase]:
        return self._run(specs.purchases_page(cursor, limit))

    def list_purchases(self, *, page_size: int | None = None) -> Iterator[m.Purchase]:
        """Every purchase of the key's merchant, oldest first, page after page (lazily)."""
        return self._walk(lambda cursor: specs.purchases_page(cursor, page_size))

    def refund(
        self,
        purchase_id: str,
        amount_micros: int,
        *,
        destination: str = "original",
        idempotency_key: str | None = None,
    ) -> m.Refund:
        return self._run(specs.refund(purchase_id, amount_micros, destination, idempotency_key))

    # --- entitlements --------------------------------------------------------

    def check_entitlement(self, customer: str, item: str) -> m.Entitlement:
        return self._run(specs.check_entitlement(customer, item))

    def entitlement_keys(self) -> list[m.EntitlementKey]:
        """The public keys that verify entitlement tokens offline."""
        return self._run(specs.entitlement_keys())

    def entitlement_key(self) -> m.EntitlementKey:
        """The current verification key (the first of :meth:`entitlement_keys`)."""
        return self.entitlement_keys()[0]

    def raw(self, method: str, path: str, body: Any = None) -> Any:
        """Any other endpoint, with the same auth, idempotency and retries; the JSON answer."""
        call = post(path, body, None) if method == "POST" else Call(method, path, body=body)
        return self._send(call).body
