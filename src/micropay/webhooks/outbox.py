"""The outbox: webhook events written in the transaction of the change they report.

:func:`attach` hooks an :class:`Outbox` into a ``Payments`` service: a paid
purchase, a settled refund, a top-up's success or decline, a tab's settlement
or freeze each write one ``webhook_events`` row (and one pending delivery per
enabled endpoint of the merchant that wants the type) in the SAME transaction
that writes the change. A change that rolls back leaves no event; a committed
change always has its event (RELIABILITY invariant 9). One event per
(type, object): a replayed hook writes nothing more.

Events of customers (top-ups, tabs) go to the merchant that owns the customer
through the API, else to the platform's endpoints (merchant 0).
"""

from __future__ import annotations

import json
import secrets
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from micropay.service.ledger import Clock, system_clock_us
from micropay.store.sql import as_mixin
from micropay.store.webhooks_sql import EventRow, WebhooksSql

PURCHASE_SUCCEEDED = "purchase.succeeded"
REFUND_SUCCEEDED = "refund.succeeded"
TOPUP_SUCCEEDED = "topup.succeeded"
TOPUP_DECLINED = "topup.declined"
TAB_SETTLED = "tab.settled"
TAB_FROZEN = "tab.frozen"
EVENT_TYPES = (
    PURCHASE_SUCCEEDED,
    REFUND_SUCCEEDED,
    TOPUP_SUCCEEDED,
    TOPUP_DECLINED,
    TAB_SETTLED,
    TAB_FROZEN,
)
PLATFORM = 0  # the merchant id of the platform's own endpoints

# (charge purpose, outcome from ChargeEngine.outcome_hooks) -> event type
_CHARGE_EVENTS = {
    ("topup", "succeeded"): TOPUP_SUCCEEDED,
    ("topup", "declined"): TOPUP_DECLINED,
    ("tab", "succeeded"): TAB_SETTLED,
    ("tab", "tab_frozen"): TAB_FROZEN,
}


def webhooks_tx(tx: Any) -> WebhooksSql:
    """The webhooks' SQL over a store transaction (bound to its cursor if not mixed in yet)."""
    return as_mixin(tx, WebhooksSql)


def new_event_id() -> str:
    return "msg_" + secrets.token_hex(12)


def iso_us(at_us: int) -> str:
    return datetime.fromtimestamp(at_us / 1_000_000, UTC).isoformat().replace("+00:00", "Z")


class Outbox:
    def __init__(self, *, clock: Clock = system_clock_us) -> None:
        self.clock = clock

    def emit(
        self, tx: Any, event_type: str, merchant_id: int, object_id: int, data: dict[str, Any]
    ) -> str | None:
        """Write one event and its deliveries in ``tx``; its id, or None if already emitted."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown event type {event_type!r}")
        sql = webhooks_tx(tx)
        now_us = self.clock()
        event_id = new_event_id()
        body = json.dumps(
            {"type": event_type, "timestamp": iso_us(now_us), "data": data},
            sort_keys=True,
            separators=(",", ":"),
        )
        event = EventRow(event_id, merchant_id, event_type, object_id, body, now_us)
        if not sql.insert_webhook_event(event):
            return None
        for endpoint in sql.list_webhook_endpoints(merchant_id):
            if endpoint.enabled and endpoint.wants(event_type):
                sql.insert_webhook_delivery(event_id, endpoint.id, now_us)
        return event_id

    # --- the hooks ------------------------------------------------------------------

    def on_sale(self, tx: Any, purchase_id: int) -> None:
        purchase = tx.get_purchase(purchase_id)
        if purchase is None:
            raise KeyError(f"purchase {purchase_id} vanished")
        merchant = tx.get_merchant(purchase.merchant_id)
        customer = tx.get_customer(purchase.customer_id)
        self.emit(
            tx,
            PURCHASE_SUCCEEDED,
            purchase.merchant_id,
            purchase.id,
            {
                "purchase_id": purchase.id,
                "merchant": merchant.public_id if merchant else "",
                "customer": customer.public_id if customer else "",
                "item_ref": purchase.item_ref,
                "price_micros": purchase.price_micros,
                "currency": purchase.currency,
                "funding": purchase.funding.value,
            },
        )

    def on_refund(self, tx: Any, refund_id: int) -> None:
        refund = tx.get_refund(refund_id)
        purchase = tx.get_purchase(refund.purchase_id) if refund else None
        if refund is None or purchase is None:
            raise KeyError(f"refund {refund_id} or its purchase vanished")
        self.emit(
            tx,
            REFUND_SUCCEEDED,
            purchase.merchant_id,
            refund.id,
            {
                "refund_id": refund.id,
                "purchase_id": purchase.id,
                "amount_micros": refund.amount_micros,
                "currency": purchase.currency,
                "destination": refund.destination,
            },
        )

    def on_charge(self, tx: Any, outcome: str, charge: Any) -> None:
        event_type = _CHARGE_EVENTS.get((charge.purpose, outcome))
        if event_type is None:
            return
        now = tx.get_charge(charge.id) or charge
        customer = tx.get_customer(charge.customer_id)
        self.emit(
            tx,
            event_type,
            webhooks_tx(tx).webhook_customer_owner(charge.customer_id),
            charge.id,
            {
                "charge_id": charge.id,
                "customer": customer.public_id if customer else "",
                "amount_micros": charge.amount_micros,
                "currency": charge.currency,
                "status": now.status,
                "decline_code": now.decline_code,
                "attempts": now.attempts,
            },
        )


def attach(payments: Any, outbox: Outbox | None = None) -> Outbox:
    """Hook an outbox into a ``Payments`` service (its purchase, refund and charge flows)."""
    box = outbox or Outbox(clock=payments.clock)
    payments.sale_hooks.append(box.on_sale)
    payments.refunds.refund_hooks.append(box.on_refund)
    hooks: list[Callable[[Any, str, Any], object]] = payments.charges.outcome_hooks
    hooks.append(box.on_charge)
    return box
