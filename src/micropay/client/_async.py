"""The asyncio/trio client (same methods as :class:`Client`, awaited)."""

from __future__ import annotations

import logging
import random
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import anyio
import httpx

from micropay.client import _specs as specs
from micropay.client import models as m
from micropay.client._async_extra import AsyncExtraMethods
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
from micropay.client.errors import MicropayError

T = TypeVar("T")
log = logging.getLogger("micropay.client")
pages_max = 1_000_000  # a bound on auto-pagination, far above any real listing


class AsyncClient(AsyncExtraMethods):
    """``AsyncClient(api_key, base_url)``: like :class:`~micropay.client.Client`, awaited.

    ``transport`` (an ``httpx.AsyncBaseTransport``, e.g. ``httpx.ASGITransport``) plugs in;
    ``sleep`` and ``rng`` make the back-off observable in tests.
    """

    def __init__(
        self,
        api_key: str | None,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout_s: float = 10.0,
        retry: RetryPolicy | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._api_key = api_key
        self.base_url = base_url
        self.retry = retry or RetryPolicy()
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._http = httpx.AsyncClient(base_url=base_url, timeout=timeout_s, transport=transport)

    def __repr__(self) -> str:
        return f"AsyncClient(base_url={self.base_url!r}, api_key={masked(self._api_key)})"

    async def __aenter__(self) -> AsyncClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # --- plumbing ------------------------------------------------------------

    async def _send(self, call: Call) -> Answer:
        headers = call.request_headers(self._api_key)
        content = call.content()
        attempt = 0
        while True:
            try:
                response = await self._http.request(
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
            await self._sleep(delay)
            attempt += 1

    async def _run(self, spec: specs.Spec[T]) -> T:
        call, parse = spec
        return parse(await self._send(call))

    async def _walk(
        self, page: Callable[[str | None], specs.Spec[specs.Page[T]]]
    ) -> AsyncIterator[T]:
        cursor: str | None = None
        for _ in range(pages_max):
            got = await self._run(page(cursor))
            for one in got.data:
                yield one
            if not got.has_more:
                return
            if specs.stuck_cursor(cursor, got):
                raise MicropayError("invalid_cursor", "the server repeated a page cursor")
            cursor = got.next_cursor

    # --- operator ------------------------------------------------------------

    async def create_merchant(
        self,
        name: str,
        currency: str,
        *,
        mode: str = "test",
        funding_policy: list[str] | None = None,
        idempotency_key: str | None = None,
    ) -> m.MerchantCreated:
        """Operator key only: a merchant and its first secret key (shown once)."""
        return await self._run(
            specs.create_merchant(name, currency, mode, funding_policy, idempotency_key)
        )

    # --- keys ----------------------------------------------------------------

    async def create_key(self, kind: str, *, idempotency_key: str | None = None) -> m.CreatedKey:
        return await self._run(specs.create_key(kind, idempotency_key))

    async def list_keys(self) -> list[m.ApiKey]:
        return await self._run(specs.list_keys())

    async def revoke_key(self, key_id: str, *, idempotency_key: str | None = None) -> m.ApiKey:
        return await self._run(specs.revoke_key(key_id, idempotency_key))

    # --- customers and items -------------------------------------------------

    async def create_customer(
        self,
        *,
        payment_method_token: str = "",
        processor_customer_token: str = "",
        idempotency_key: str | None = None,
    ) -> m.Customer:
        return await self._run(
            specs.create_customer(payment_method_token, processor_customer_token, idempotency_key)
        )

    async def get_customer(self, customer: str) -> m.Customer:
        return await self._run(specs.get_customer(customer))

    async def customers_page(
        self, cursor: str | None = None, limit: int | None = None
    ) -> specs.Page[m.Customer]:
        return await self._run(specs.customers_page(cursor, limit))

    def list_customers(self, *, page_size: int | None = None) -> AsyncIterator[m.Customer]:
        """Every customer, page after page (lazily)."""
        return self._walk(lambda cursor: specs.customers_page(cursor, page_size))

    async def put_item(
        self,
        item_ref: str,
        name: str,
        price_micros: int,
        *,
        access_period_s: int = 0,
        consumable: bool = False,
    ) -> m.Item:
        return await self._run(
            specs.put_item(item_ref, name, price_micros, access_period_s, consumable)
        )

    async def get_item(self, item_ref: str) -> m.Item:
        return await self._run(specs.get_item(item_ref))

    # --- money ---------------------------------------------------------------

    async def top_up(
        self, customer: str, amount_micros: int, *, idempotency_key: str | None = None
    ) -> m.TopUp:
        return await self._run(specs.top_up(customer, amount_micros, idempotency_key))

    async def purchase(
        self,
        customer: str,
        item: str,
        *,
        price_micros: int | None = None,
        currency: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.Purchase:
        """Buy ``item`` for ``customer``; refusals raise (402 :class:`PaymentRequiredError`...)."""
        return await self._run(
            specs.purchase(customer, item, price_micros, currency, idempotency_key)
        )

    async def get_purchase(self, purchase_id: str) -> m.Purchase:
        return await self._run(specs.get_purchase(purchase_id))

    async def purchases_page(
        self, cursor: str | None = None, limit: int | None = None
    ) -> specs.Page[m.Purchase]:
        return await self._run(specs.purchases_page(cursor, limit))

    def list_purchases(self, *, page_size: int | None = None) -> AsyncIterator[m.Purchase]:
        """Every purchase of the key's merchant, oldest first, page after page (lazily)."""
        return self._walk(lambda cursor: specs.purchases_page(cursor, page_size))

    async def refund(
        self,
        purchase_id: str,
        amount_micros: int,
        *,
        destination: str = "original",
        idempotency_key: str | None = None,
    ) -> m.Refund:
        return await self._run(
            specs.refund(purchase_id, amount_micros, destination, idempotency_key)
        )

    # --- entitlements --------------------------------------------------------

    async def check_entitlement(self, customer: str, item: str) -> m.Entitlement:
        return await self._run(specs.check_entitlement(customer, item))

    async def entitlement_keys(self) -> list[m.EntitlementKey]:
        """The public keys that verify entitlement tokens offline."""
        return await self._run(specs.entitlement_keys())

    async def entitlement_key(self) -> m.EntitlementKey:
        """The current verification key (the first of :meth:`entitlement_keys`)."""
        return (await self.entitlement_keys())[0]

    async def raw(self, method: str, path: str, body: Any = None) -> Any:
        """Any other endpoint, with the same auth, idempotency and retries; the JSON answer."""
        call = post(path, body, None) if method == "POST" else Call(method, path, body=body)
        return (await self._send(call)).body
