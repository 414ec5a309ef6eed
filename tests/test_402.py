"""HTTP 402 middleware: a tiny Starlette app behind a paywall, charging through the real API.

Everything runs in process: the protected app calls the micropay app through
``httpx.ASGITransport``. A funded caller gets 200 and is charged once per item
(or once per access period); an unfunded caller, an unknown caller and a caller
with no id get 402 with the offer, and the protected handler never runs for them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from conftest import FakeClock
from micropay.api import ApiConfig, create_app
from micropay.api.admin import create_key
from micropay.client import AsyncClient, Client, PaymentRequiredError
from micropay.paywall402 import PaymentRequiredMiddleware
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from test_sdk import PortalTransport

API = "http://micropay.test"
SITE = "http://site.test"
PRICE = 2_500_000  # 2.50: a 5.00 wallet affords exactly two


@dataclass
class Site:
    api_app: Any
    token: str
    served: list[str] = field(default_factory=list)

    def protected(self, key: str | None = None, **options: Any) -> PaymentRequiredMiddleware:
        async def article(request: Request) -> JSONResponse:
            self.served.append(request.url.path)
            bought = request.scope["state"]["micropay_purchase"]
            return JSONResponse({"text": "the news", "purchase": bought.id})

        async def free(request: Request) -> JSONResponse:
            self.served.append(request.url.path)
            return JSONResponse({"text": "free"})

        inner = Starlette(routes=[Route("/articles/{n}", article), Route("/free", free)])
        client = AsyncClient(
            key or self.token, API, transport=httpx.ASGITransport(app=self.api_app)
        )
        settings: dict[str, Any] = {
            "price_micros": PRICE,
            "item_ref": lambda scope: "article-" + scope["path"].rsplit("/", 1)[-1],
            "customer_from": lambda scope: (
                dict(scope["headers"]).get(b"x-customer", b"").decode() or None
            ),
            "match": lambda scope: scope["path"].startswith("/articles/"),
            "pay_url": "https://pay.example/top-up",
        }
        settings.update(options)
        return PaymentRequiredMiddleware(inner, client=client, **settings)

    def sync_api(self) -> Iterator[Client]:
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            Client(self.token, API, transport=PortalTransport(self.api_app, portal)) as mp,
        ):
            yield mp


def get(app: Any, path: str, customer: str | None) -> httpx.Response:
    async def go() -> httpx.Response:
        headers = {"x-customer": customer} if customer else {}
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url=SITE) as c:
            return await c.get(path, headers=headers)

    return anyio.run(go)


@pytest.fixture
def site(database_url: str, clock: FakeClock) -> Iterator[Site]:
    operator = create_key(database_url, "operator", "live")
    api_app = create_app(ApiConfig(database_url, processor=SimulatedProcessor(), clock=clock))
    try:
        with (
            anyio.from_thread.start_blocking_portal() as portal,
            Client(operator, API, transport=PortalTransport(api_app, portal)) as op,
        ):
            made = op.create_merchant("Daily Planet", "USD", funding_policy=["wallet"])
        assert made.secret_key.token is not None
        yield Site(api_app, made.secret_key.token)
    finally:
        api_app.state.runtime.close()
    store = open_store(database_url)
    try:
        assert reconcile(store).ok
    finally:
        store.close()


def _reader(site: Site, funded: bool) -> str:
    for mp in site.sync_api():
        reader = mp.create_customer(payment_method_token="pm_card_ok")
        if funded:
            mp.top_up(reader.id, 5_000_000)
        return reader.id
    raise AssertionError("unreachable")


def _purchases(site: Site) -> list[tuple[str, str]]:
    for mp in site.sync_api():
        return [(p.customer, p.item) for p in mp.list_purchases()]
    raise AssertionError("unreachable")


def _assert_offer(r: httpx.Response, code: str) -> dict[str, Any]:
    assert r.status_code == 402, r.text
    offer = r.json()
    assert offer["error"]["code"] == code
    assert (offer["price"], offer["price_micros"], offer["currency"]) == ("2.50", PRICE, "USD")
    assert offer["pay_url"] == "https://pay.example/top-up"
    assert offer["methods"] == ["wallet", "tab", "direct"]
    hint = r.headers["www-authenticate"]
    assert hint.startswith('Micropay realm="micropay"')
    assert f'item="{offer["item"]}"' in hint
    assert 'price="2.50"' in hint
    return offer


def test_a_funded_caller_is_served_and_charged_once_per_article(site: Site) -> None:
    app = site.protected()
    reader = _reader(site, funded=True)
    first = get(app, "/articles/1", reader)
    assert first.status_code == 200, first.text
    assert first.json()["text"] == "the news"
    assert first.headers["micropay-purchase"] == first.json()["purchase"]
    again = get(app, "/articles/1", reader)
    assert again.status_code == 200
    assert again.headers["micropay-purchase"] == first.headers["micropay-purchase"]
    assert get(app, "/articles/2", reader).status_code == 200
    assert _purchases(site) == [(reader, "article-1"), (reader, "article-2")]
    # 5.00 - 2 x 2.50 = 0: the third article is refused with the offer, and not served.
    broke = get(app, "/articles/3", reader)
    offer = _assert_offer(broke, "insufficient_funds")
    assert offer["item"] == "article-3"
    assert offer["error"]["request_id"].startswith("req_")
    assert site.served == ["/articles/1", "/articles/1", "/articles/2"]
    assert len(_purchases(site)) == 2


def test_unfunded_unknown_and_anonymous_callers_get_402(site: Site) -> None:
    app = site.protected()
    reader = _reader(site, funded=False)
    _assert_offer(get(app, "/articles/1", reader), "insufficient_funds")
    _assert_offer(get(app, "/articles/1", "cus_0123456789abcdef"), "customer_not_found")
    _assert_offer(get(app, "/articles/1", None), "customer_required")
    _assert_offer(get(app, "/articles/1", "not-an-id"), "validation_failed")
    assert site.served == []
    assert _purchases(site) == []
    free = get(app, "/free", None)  # not matched: passes through, no payment asked
    assert (free.status_code, site.served) == (200, ["/free"])


def test_an_access_period_is_charged_once_per_period(site: Site, clock: FakeClock) -> None:
    app = site.protected(item_ref="feed", access_period_s=3600)
    reader = _reader(site, funded=True)
    for _ in range(3):
        assert get(app, "/articles/1", reader).status_code == 200
    assert _purchases(site) == [(reader, "feed")]
    clock.advance(3601)
    assert get(app, "/articles/2", reader).status_code == 200
    assert _purchases(site) == [(reader, "feed"), (reader, "feed")]
    clock.advance(3601)
    _assert_offer(get(app, "/articles/3", reader), "insufficient_funds")  # 5.00 spent


def test_a_price_per_call_charges_every_request(site: Site) -> None:
    app = site.protected(item_ref="forecast", per_call=True)
    reader = _reader(site, funded=True)
    first, second = get(app, "/articles/1", reader), get(app, "/articles/1", reader)
    assert (first.status_code, second.status_code) == (200, 200)
    assert first.headers["micropay-purchase"] != second.headers["micropay-purchase"]
    assert _purchases(site) == [(reader, "forecast"), (reader, "forecast")]
    # 5.00 - 2 x 2.50 = 0: the third call is refused, with an offer that says per call.
    offer = _assert_offer(get(app, "/articles/1", reader), "insufficient_funds")
    assert (offer["item"], offer["per_call"]) == ("forecast", True)
    assert site.served == ["/articles/1", "/articles/1"]
    for mp in site.sync_api():
        assert mp.get_item("forecast").consumable is True
    with pytest.raises(ValueError, match="per call"):
        site.protected(per_call=True, access_period_s=60)


def test_the_paywall_fails_closed_when_the_api_refuses_its_key(site: Site) -> None:
    app = site.protected(key="mp_sk_test_0000000000000000_wrong")
    reader = _reader(site, funded=True)
    r = get(app, "/articles/1", reader)
    assert r.status_code == 503
    assert r.json()["error"]["code"] == "payments_unavailable"
    assert site.served == []


def test_the_catalogue_price_is_the_middlewares(site: Site) -> None:
    """The middleware puts its item at its price; a buyer is charged exactly that."""
    app = site.protected()
    reader = _reader(site, funded=True)
    assert get(app, "/articles/7", reader).status_code == 200
    for mp in site.sync_api():
        assert mp.get_item("article-7").price_micros == PRICE
        mp.put_item("one-micro-more", "x", PRICE + 1)
        with pytest.raises(PaymentRequiredError):  # 2.50 left: exactly PRICE was charged
            mp.purchase(reader, "one-micro-more")
        mp.put_item("the-rest", "x", PRICE)
        assert mp.purchase(reader, "the-rest").status == "ok"
