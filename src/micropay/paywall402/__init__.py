"""HTTP 402 for any ASGI app: charge a price per resource (or per access period) through the API.

::

    from micropay.client import AsyncClient
    from micropay.paywall402 import PaymentRequiredMiddleware

    app = PaymentRequiredMiddleware(
        app,
        client=AsyncClient("mp_sk_...", "https://micropay.example"),
        price_micros=250_000,
        item_ref=lambda scope: "article-" + scope["path"].rsplit("/", 1)[-1],
        customer_from=lambda scope: dict(scope["headers"]).get(b"x-customer", b"").decode() or None,
        match=lambda scope: scope["path"].startswith("/articles/"),
    )

For each matching HTTP request the middleware makes sure the item exists at
``price_micros`` (one ``PUT /v1/items`` per item and process), then buys it for
the caller with ``POST /v1/purchases`` (the SDK's automatic idempotency key
makes its retries safe). The purchase answers ``ok`` (charged now, request
passes), ``already_entitled`` (owned, or within its access period: passes, no
second charge) or a refusal. So a caller is charged once per item, or once per
``access_period_s`` when that is set, or, with ``per_call=True``, on every
request: the item is then *consumable* (a price per use), so each request is a
purchase of its own and nothing is kept between requests.

When the caller cannot pay, the answer is **402 Payment Required**, with
``WWW-Authenticate: Micropay realm="...", item="...", price="0.25", currency="USD"``
and this JSON body (the *offer*)::

    {
      "price": "0.25",              # decimal string in currency units
      "price_micros": 250000,
      "currency": "USD",
      "item": "article-1",
      "access_period_s": 0,         # 0: owned forever once bought
      "per_call": false,            # true: every request is charged
      "pay_url": "https://...",     # where a person can top up (null if not configured)
      "methods": ["wallet", "tab", "direct"],
      "error": {"code": "insufficient_funds", "message": "...", "request_id": "req_..."}
    }

``error.code`` is ``customer_required`` (no customer identified),
``customer_not_found``, ``charge_pending`` (retry shortly) or the API's own
402 code (``insufficient_funds``, ``tab_frozen``, ``no_payment_method``,
``charge_declined``, ``fee_guard_refused``), or ``validation_failed`` when
the customer id is malformed. When the API itself cannot be
reached or refuses the middleware's key, the answer is 503 in the same
``{"error": ...}`` envelope and the request does not pass (fail closed).
Passing requests get a ``Micropay-Purchase: pur_...`` response header and
``scope["state"]["micropay_purchase"]`` (the SDK's :class:`Purchase`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import Any

from micropay.client import (
    AsyncClient,
    InvalidRequestError,
    Item,
    MicropayError,
    NotFoundError,
    PaymentRequiredError,
)
from micropay.client.models import Purchase

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Any]
Send = Callable[[Message], Any]
ASGIApp = Callable[[Scope, Receive, Send], Any]

log = logging.getLogger("micropay.paywall402")
DEFAULT_METHODS = ("wallet", "tab", "direct")


class PaymentRequiredMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        client: AsyncClient,
        price_micros: int,
        item_ref: str | Callable[[Scope], str],
        customer_from: Callable[[Scope], str | None],
        match: Callable[[Scope], bool] | None = None,
        item_name: str | None = None,
        access_period_s: int = 0,
        currency: str | None = None,
        pay_url: str | None = None,
        methods: tuple[str, ...] = DEFAULT_METHODS,
        realm: str = "micropay",
        per_call: bool = False,
    ) -> None:
        if per_call and access_period_s:
            raise ValueError("a price per call grants no access period")
        self.app = app
        self.client = client
        self.price_micros = price_micros
        self.item_ref = item_ref
        self.customer_from = customer_from
        self.match = match
        self.item_name = item_name
        self.access_period_s = access_period_s
        self.currency = currency
        self.pay_url = pay_url
        self.methods = list(methods)
        self.realm = realm
        self.per_call = per_call
        self._items: dict[str, Item] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or (self.match is not None and not self.match(scope)):
            await self.app(scope, receive, send)
            return
        ref = self.item_ref(scope) if callable(self.item_ref) else self.item_ref
        try:
            item = await self._item(ref)
        except MicropayError as error:
            await _unavailable(send, error)
            return
        customer = self.customer_from(scope)
        if not customer:
            await self._offer(send, item, "customer_required", "identify the paying customer")
            return
        try:
            purchase = await self.client.purchase(
                customer, ref, price_micros=item.price_micros, currency=self.currency
            )
        except (PaymentRequiredError, NotFoundError, InvalidRequestError) as refused:
            if refused.code == "item_not_found":
                self._items.pop(ref, None)  # deleted behind our back: recreate next time
            await self._offer(send, item, refused.code, refused.message, refused.request_id)
            return
        except MicropayError as error:
            await _unavailable(send, error)
            return
        if not purchase.granted:  # charge_pending: the processor has not answered yet
            await self._offer(send, item, purchase.status, purchase.message or "retry shortly")
            return
        await self._pass(scope, receive, send, purchase)

    async def _item(self, ref: str) -> Item:
        known = self._items.get(ref)
        if known is None:
            known = await self.client.put_item(
                ref,
                self.item_name or ref,
                self.price_micros,
                access_period_s=self.access_period_s,
                consumable=self.per_call,
            )
            self._items[ref] = known
        return known

    async def _pass(self, scope: Scope, receive: Receive, send: Send, purchase: Purchase) -> None:
        scope.setdefault("state", {})["micropay_purchase"] = purchase
        receipt = (purchase.id or "").encode()

        async def send_with_receipt(message: Message) -> None:
            if message["type"] == "http.response.start" and receipt:
                headers = [*message.get("headers", []), (b"micropay-purchase", receipt)]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_receipt)

    async def _offer(
        self, send: Send, item: Item, code: str, message: str, request_id: str | None = None
    ) -> None:
        body = {
            "price": item.price,
            "price_micros": item.price_micros,
            "currency": item.currency,
            "item": item.item_ref,
            "access_period_s": item.access_period_s,
            "per_call": self.per_call,
            "pay_url": self.pay_url,
            "methods": self.methods,
            "error": {"code": code, "message": message, "request_id": request_id},
        }
        hint = (
            f'Micropay realm="{self.realm}", item="{item.item_ref}", '
            f'price="{item.price}", currency="{item.currency}"'
        )
        if self.pay_url:
            hint += f', pay_url="{self.pay_url}"'
        await _send_json(send, 402, body, [(b"www-authenticate", hint.encode())])


async def _unavailable(send: Send, error: MicropayError) -> None:
    log.warning("paywall_unavailable %s %s", error.code, error.status)
    body = {"error": {"code": "payments_unavailable", "message": "cannot take payment now"}}
    await _send_json(send, 503, body, [(b"retry-after", b"5")])


async def _send_json(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]]
) -> None:
    payload = json.dumps(body, separators=(",", ":")).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


__all__ = ["PaymentRequiredMiddleware"]
