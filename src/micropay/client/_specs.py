"""Each endpoint once: the request to send and how to read the answer (both clients use these)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar
from urllib.parse import quote

from micropay.client import models as m
from micropay.client._core import Answer, Call, post

T = TypeVar("T")
Spec = tuple[Call, Callable[[Answer], T]]


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    data: list[T]
    has_more: bool
    next_cursor: str | None


def _seg(value: str) -> str:
    return quote(value, safe="")


def _page(parse: Callable[[dict[str, Any]], T]) -> Callable[[Answer], Page[T]]:
    def read(a: Answer) -> Page[T]:
        return Page([parse(x) for x in a.body["data"]], a.body["has_more"], a.body["next_cursor"])

    return read


def _paging(cursor: str | None, limit: int | None) -> dict[str, Any]:
    params: dict[str, Any] = {}
    if limit is not None:
        params["limit"] = limit
    if cursor is not None:
        params["cursor"] = cursor
    return params


def create_merchant(
    name: str, currency: str, mode: str, funding_policy: list[str] | None, key: str | None
) -> Spec[m.MerchantCreated]:
    body: dict[str, Any] = {"name": name, "currency": currency, "mode": mode}
    if funding_policy is not None:
        body["funding_policy"] = list(funding_policy)
    return post("/v1/merchants", body, key), lambda a: m.MerchantCreated.from_json(a.body)


def create_key(kind: str, key: str | None) -> Spec[m.CreatedKey]:
    return post("/v1/keys", {"kind": kind}, key), lambda a: m.CreatedKey.from_json(a.body)


def list_keys() -> Spec[list[m.ApiKey]]:
    return Call("GET", "/v1/keys"), lambda a: [m.ApiKey.from_json(x) for x in a.body["data"]]


def revoke_key(key_id: str, key: str | None) -> Spec[m.ApiKey]:
    call = post(f"/v1/keys/{_seg(key_id)}/revoke", None, key)
    return call, lambda a: m.ApiKey.from_json(a.body)


def create_customer(
    payment_method_token: str, processor_customer_token: str, key: str | None
) -> Spec[m.Customer]:
    body: dict[str, Any] = {}
    if payment_method_token:
        body["payment_method_token"] = payment_method_token
    if processor_customer_token:
        body["processor_customer_token"] = processor_customer_token
    return post("/v1/customers", body, key), lambda a: m.Customer.from_json(a.body)


def get_customer(customer: str) -> Spec[m.Customer]:
    return Call("GET", f"/v1/customers/{_seg(customer)}"), lambda a: m.Customer.from_json(a.body)


def customers_page(cursor: str | None, limit: int | None) -> Spec[Page[m.Customer]]:
    return Call("GET", "/v1/customers", _paging(cursor, limit)), _page(m.Customer.from_json)


def put_item(
    item_ref: str, name: str, price_micros: int, access_period_s: int, consumable: bool = False
) -> Spec[m.Item]:
    body: dict[str, object] = {
        "name": name,
        "price_micros": price_micros,
        "access_period_s": access_period_s,
    }
    if consumable:
        body["consumable"] = True
    call = Call("PUT", f"/v1/items/{_seg(item_ref)}", body=body)
    return call, lambda a: m.Item.from_json(a.body)


def get_item(item_ref: str) -> Spec[m.Item]:
    return Call("GET", f"/v1/items/{_seg(item_ref)}"), lambda a: m.Item.from_json(a.body)


def top_up(customer: str, amount_micros: int, key: str | None) -> Spec[m.TopUp]:
    call = post(f"/v1/customers/{_seg(customer)}/top-ups", {"amount_micros": amount_micros}, key)
    return call, lambda a: m.TopUp.from_json(a.body, a.replayed)


def purchase(
    customer: str, item: str, price_micros: int | None, currency: str | None, key: str | None
) -> Spec[m.Purchase]:
    body: dict[str, Any] = {"customer": customer, "item": item}
    if price_micros is not None:
        body["price_micros"] = price_micros
    if currency is not None:
        body["currency"] = currency
    return post("/v1/purchases", body, key), lambda a: m.Purchase.from_json(a.body, a.replayed)


def get_purchase(purchase_id: str) -> Spec[m.Purchase]:
    call = Call("GET", f"/v1/purchases/{_seg(purchase_id)}")
    return call, lambda a: m.Purchase.from_json(a.body)


def purchases_page(cursor: str | None, limit: int | None) -> Spec[Page[m.Purchase]]:
    return Call("GET", "/v1/purchases", _paging(cursor, limit)), _page(m.Purchase.from_json)


def refund(
    purchase_id: str, amount_micros: int, destination: str, key: str | None
) -> Spec[m.Refund]:
    body = {"amount_micros": amount_micros, "destination": destination}
    call = post(f"/v1/purchases/{_seg(purchase_id)}/refunds", body, key)
    return call, lambda a: m.Refund.from_json(a.body)


def check_entitlement(customer: str, item: str) -> Spec[m.Entitlement]:
    call = Call("GET", "/v1/entitlements", {"customer": customer, "item": item})
    return call, lambda a: m.Entitlement.from_json(a.body)


def entitlement_keys() -> Spec[list[m.EntitlementKey]]:
    return Call("GET", "/v1/entitlement-keys"), lambda a: [
        m.EntitlementKey.from_json(x) for x in a.body["keys"]
    ]


def stuck_cursor(previous: str | None, page: Page[Any]) -> bool:
    """A server that hands back the same cursor would loop forever: stop instead."""
    return page.has_more and (page.next_cursor is None or page.next_cursor == previous)
