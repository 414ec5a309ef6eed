"""Webhooks, events, tabs, tips, subscriptions, usage, payment methods and gift cards: each endpoint
once, the request to send and how to read the answer (both clients use these)."""

from __future__ import annotations

from typing import Any

from micropay.client import models as m
from micropay.client import models_extra as x
from micropay.client._core import Call, post
from micropay.client._specs import Page, Spec, _page, _paging, _seg


def _hooks(endpoint: str) -> str:
    return f"/v1/webhook-endpoints/{_seg(endpoint)}"


# --- webhook endpoints and events -----------------------------------------------------------


def create_webhook_endpoint(
    url: str, events: list[str] | None, key: str | None
) -> Spec[x.WebhookEndpointCreated]:
    body: dict[str, Any] = {"url": url}
    if events is not None:
        body["events"] = list(events)
    call = post("/v1/webhook-endpoints", body, key)
    return call, lambda a: x.WebhookEndpointCreated.from_json(a.body)


def list_webhook_endpoints() -> Spec[list[x.WebhookEndpoint]]:
    return Call("GET", "/v1/webhook-endpoints"), lambda a: [
        x.WebhookEndpoint.from_json(e) for e in a.body["data"]
    ]


def get_webhook_endpoint(endpoint: str) -> Spec[x.WebhookEndpoint]:
    return Call("GET", _hooks(endpoint)), lambda a: x.WebhookEndpoint.from_json(a.body)


def set_webhook_endpoint_enabled(
    endpoint: str, enabled: bool, key: str | None
) -> Spec[x.WebhookEndpoint]:
    call = post(f"{_hooks(endpoint)}/{'enable' if enabled else 'disable'}", None, key)
    return call, lambda a: x.WebhookEndpoint.from_json(a.body)


def delete_webhook_endpoint(endpoint: str) -> Spec[x.WebhookEndpoint]:
    return Call("DELETE", _hooks(endpoint)), lambda a: x.WebhookEndpoint.from_json(a.body)


def rotate_webhook_secret(endpoint: str, key: str | None) -> Spec[x.WebhookEndpointCreated]:
    call = post(f"{_hooks(endpoint)}/rotate-secret", None, key)
    return call, lambda a: x.WebhookEndpointCreated.from_json(a.body)


def webhook_deliveries_page(
    endpoint: str, cursor: str | None, limit: int | None
) -> Spec[Page[x.Delivery]]:
    call = Call("GET", f"{_hooks(endpoint)}/deliveries", _paging(cursor, limit))
    return call, _page(x.Delivery.from_json)


def replay_webhook_delivery(endpoint: str, delivery: str, key: str | None) -> Spec[x.Delivery]:
    call = post(f"{_hooks(endpoint)}/deliveries/{_seg(delivery)}/replay", None, key)
    return call, lambda a: x.Delivery.from_json(a.body)


def events_page(
    cursor: str | None, limit: int | None, event_type: str | None
) -> Spec[Page[x.Event]]:
    params = _paging(cursor, limit)
    if event_type is not None:
        params["type"] = event_type
    return Call("GET", "/v1/events", params), _page(x.Event.from_json)


def get_event(event_id: str) -> Spec[x.Event]:
    return Call("GET", f"/v1/events/{_seg(event_id)}"), lambda a: x.Event.from_json(a.body)


# --- tabs -------------------------------------------------------------------------------------


def get_tab(customer: str) -> Spec[x.Tab]:
    return Call("GET", f"/v1/customers/{_seg(customer)}/tab"), lambda a: x.Tab.from_json(a.body)


def settle_tab(customer: str, key: str | None) -> Spec[x.TabSettlement]:
    call = post(f"/v1/customers/{_seg(customer)}/tab/settle", None, key)
    return call, lambda a: x.TabSettlement.from_json(a.body)


# --- subscriptions ------------------------------------------------------------------------------


def put_plan(plan_ref: str, name: str, period: str, price_micros: int) -> Spec[x.Plan]:
    body = {"name": name, "period": period, "price_micros": price_micros}
    call = Call("PUT", f"/v1/plans/{_seg(plan_ref)}", body=body)
    return call, lambda a: x.Plan.from_json(a.body)


def get_plan(plan_ref: str) -> Spec[x.Plan]:
    return Call("GET", f"/v1/plans/{_seg(plan_ref)}"), lambda a: x.Plan.from_json(a.body)


def subscribe(customer: str, plan: str, time_zone: str, key: str | None) -> Spec[x.Subscription]:
    body = {"customer": customer, "plan": plan, "time_zone": time_zone}
    return post("/v1/subscriptions", body, key), lambda a: x.Subscription.from_json(a.body)


def get_subscription(subscription: str) -> Spec[x.Subscription]:
    call = Call("GET", f"/v1/subscriptions/{_seg(subscription)}")
    return call, lambda a: x.Subscription.from_json(a.body)


def cancel_subscription(
    subscription: str, at_period_end: bool, key: str | None
) -> Spec[x.Subscription]:
    call = post(
        f"/v1/subscriptions/{_seg(subscription)}/cancel", {"at_period_end": at_period_end}, key
    )
    return call, lambda a: x.Subscription.from_json(a.body)


# --- tips ---------------------------------------------------------------------------------------


def tip(
    customer: str, amount_micros: int, note: str, item: str | None, key: str | None
) -> Spec[x.Tip]:
    body: dict[str, Any] = {"customer": customer, "amount_micros": amount_micros}
    if note:
        body["note"] = note
    if item is not None:
        body["item"] = item
    call = post("/v1/tips", body, key)
    return call, lambda a: x.Tip.from_json(a.body, a.replayed)


# --- usage --------------------------------------------------------------------------------------


def put_meter(meter: str, unit_price_micros: int) -> Spec[x.Meter]:
    call = Call("PUT", f"/v1/meters/{_seg(meter)}", body={"unit_price_micros": unit_price_micros})
    return call, lambda a: x.Meter.from_json(a.body)


def get_meter(meter: str) -> Spec[x.Meter]:
    return Call("GET", f"/v1/meters/{_seg(meter)}"), lambda a: x.Meter.from_json(a.body)


def record_usage(customer: str, meter: str, quantity: int, key: str | None) -> Spec[x.UsageEvent]:
    body = {"customer": customer, "meter": meter, "quantity": quantity}
    call = post("/v1/usage-events", body, key)
    return call, lambda a: x.UsageEvent.from_json(a.body, a.replayed)


def usage_page(
    cursor: str | None, limit: int | None, customer: str | None
) -> Spec[Page[x.UsageEvent]]:
    params = _paging(cursor, limit)
    if customer is not None:
        params["customer"] = customer
    return Call("GET", "/v1/usage-events", params), _page(x.UsageEvent.from_json)


# --- payment methods and gift cards --------------------------------------------------------------


def attach_payment_method(
    customer: str, payment_method_token: str, processor_customer_token: str | None, key: str | None
) -> Spec[m.Customer]:
    body: dict[str, Any] = {"payment_method_token": payment_method_token}
    if processor_customer_token is not None:
        body["processor_customer_token"] = processor_customer_token
    call = post(f"/v1/customers/{_seg(customer)}/payment-method", body, key)
    return call, lambda a: m.Customer.from_json(a.body)


def detach_payment_method(customer: str) -> Spec[m.Customer]:
    call = Call("DELETE", f"/v1/customers/{_seg(customer)}/payment-method")
    return call, lambda a: m.Customer.from_json(a.body)


def issue_gift_cards(
    count: int, value_micros: int, currency: str, expires_at_us: int, key: str | None
) -> Spec[x.GiftCardBatch]:
    body = {
        "count": count,
        "value_micros": value_micros,
        "currency": currency,
        "expires_at_us": expires_at_us,
    }
    return post("/v1/gift-cards", body, key), lambda a: x.GiftCardBatch.from_json(a.body)


def redeem_gift_card(customer: str, code: str, key: str | None) -> Spec[x.GiftCardRedemption]:
    call = post(f"/v1/customers/{_seg(customer)}/gift-card-redemptions", {"code": code}, key)
    return call, lambda a: x.GiftCardRedemption.from_json(a.body)


# --- payouts ----------------------------------------------------------------------------------


def create_payee(
    name: str,
    currency: str,
    destination_token: str,
    schedule: str,
    threshold_micros: int | None,
    hold_s: int | None,
    key: str | None,
) -> Spec[x.Payee]:
    body: dict[str, Any] = {
        "name": name,
        "currency": currency,
        "destination_token": destination_token,
        "schedule": schedule,
    }
    if threshold_micros is not None:
        body["threshold_micros"] = threshold_micros
    if hold_s is not None:
        body["hold_s"] = hold_s
    return post("/v1/payees", body, key), lambda a: x.Payee.from_json(a.body)


def get_payee(payee: str) -> Spec[x.Payee]:
    return Call("GET", f"/v1/payees/{_seg(payee)}"), lambda a: x.Payee.from_json(a.body)


def payee_balances(payee: str) -> Spec[x.PayeeBalances]:
    call = Call("GET", f"/v1/payees/{_seg(payee)}/balances")
    return call, lambda a: x.PayeeBalances.from_json(a.body)


def payouts_page(payee: str, cursor: str | None, limit: int | None) -> Spec[Page[x.Payout]]:
    call = Call("GET", f"/v1/payees/{_seg(payee)}/payouts", _paging(cursor, limit))
    return call, _page(x.Payout.from_json)


def put_split(item_ref: str, shares: list[tuple[str, int]]) -> Spec[x.Split]:
    body = {"shares": [{"payee": payee, "share_bps": bps} for payee, bps in shares]}
    call = Call("PUT", f"/v1/items/{_seg(item_ref)}/split", body=body)
    return call, lambda a: x.Split.from_json(a.body)


def get_split(item_ref: str) -> Spec[x.Split]:
    call = Call("GET", f"/v1/items/{_seg(item_ref)}/split")
    return call, lambda a: x.Split.from_json(a.body)
