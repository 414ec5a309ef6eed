"""The blocking client's methods for webhooks, events, tabs, tips, subscriptions, usage,
payment methods and gift cards (mixed into :class:`~micropay.client.Client`)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TypeVar

from micropay.client import _specs_extra as sx
from micropay.client import models as m
from micropay.client import models_extra as x
from micropay.client._specs import Page, Spec

T = TypeVar("T")


class ExtraMethods:
    def _run(self, spec: Spec[T]) -> T:
        raise NotImplementedError

    def _walk(self, page: Callable[[str | None], Spec[Page[T]]]) -> Iterator[T]:
        raise NotImplementedError

    # --- webhook endpoints and events ------------------------------------------------------

    def create_webhook_endpoint(
        self, url: str, *, events: list[str] | None = None, idempotency_key: str | None = None
    ) -> x.WebhookEndpointCreated:
        """Register an endpoint; ``secret`` (shown once) verifies the signed deliveries."""
        return self._run(sx.create_webhook_endpoint(url, events, idempotency_key))

    def list_webhook_endpoints(self) -> list[x.WebhookEndpoint]:
        return self._run(sx.list_webhook_endpoints())

    def get_webhook_endpoint(self, endpoint: str) -> x.WebhookEndpoint:
        return self._run(sx.get_webhook_endpoint(endpoint))

    def disable_webhook_endpoint(
        self, endpoint: str, *, idempotency_key: str | None = None
    ) -> x.WebhookEndpoint:
        return self._run(sx.set_webhook_endpoint_enabled(endpoint, False, idempotency_key))

    def enable_webhook_endpoint(
        self, endpoint: str, *, idempotency_key: str | None = None
    ) -> x.WebhookEndpoint:
        return self._run(sx.set_webhook_endpoint_enabled(endpoint, True, idempotency_key))

    def delete_webhook_endpoint(self, endpoint: str) -> x.WebhookEndpoint:
        return self._run(sx.delete_webhook_endpoint(endpoint))

    def rotate_webhook_secret(
        self, endpoint: str, *, idempotency_key: str | None = None
    ) -> x.WebhookEndpointCreated:
        return self._run(sx.rotate_webhook_secret(endpoint, idempotency_key))

    def webhook_deliveries_page(
        self, endpoint: str, cursor: str | None = None, limit: int | None = None
    ) -> Page[x.Delivery]:
        return self._run(sx.webhook_deliveries_page(endpoint, cursor, limit))

    def list_webhook_deliveries(
        self, endpoint: str, *, page_size: int | None = None
    ) -> Iterator[x.Delivery]:
        """The endpoint's delivery log, each delivery with its attempts (lazily)."""
        return self._walk(lambda cursor: sx.webhook_deliveries_page(endpoint, cursor, page_size))

    def replay_webhook_delivery(
        self, endpoint: str, delivery: str, *, idempotency_key: str | None = None
    ) -> x.Delivery:
        return self._run(sx.replay_webhook_delivery(endpoint, delivery, idempotency_key))

    def events_page(
        self, cursor: str | None = None, limit: int | None = None, *, event_type: str | None = None
    ) -> Page[x.Event]:
        return self._run(sx.events_page(cursor, limit, event_type))

    def list_events(
        self, *, event_type: str | None = None, page_size: int | None = None
    ) -> Iterator[x.Event]:
        """The merchant's events, oldest first, page after page (lazily)."""
        return self._walk(lambda cursor: sx.events_page(cursor, page_size, event_type))

    def get_event(self, event_id: str) -> x.Event:
        return self._run(sx.get_event(event_id))

    # --- tabs ------------------------------------------------------------------------------

    def get_tab(self, customer: str) -> x.Tab:
        return self._run(sx.get_tab(customer))

    def settle_tab(self, customer: str, *, idempotency_key: str | None = None) -> x.TabSettlement:
        """Charge what the tab owes now; a declined card raises 402 and freezes the tab."""
        return self._run(sx.settle_tab(customer, idempotency_key))

    # --- subscriptions ---------------------------------------------------------------------

    def put_plan(self, plan_ref: str, name: str, period: str, price_micros: int) -> x.Plan:
        return self._run(sx.put_plan(plan_ref, name, period, price_micros))

    def get_plan(self, plan_ref: str) -> x.Plan:
        return self._run(sx.get_plan(plan_ref))

    def subscribe(
        self,
        customer: str,
        plan: str,
        *,
        time_zone: str = "UTC",
        idempotency_key: str | None = None,
    ) -> x.Subscription:
        return self._run(sx.subscribe(customer, plan, time_zone, idempotency_key))

    def get_subscription(self, subscription: str) -> x.Subscription:
        return self._run(sx.get_subscription(subscription))

    def cancel_subscription(
        self,
        subscription: str,
        *,
        at_period_end: bool = True,
        idempotency_key: str | None = None,
    ) -> x.Subscription:
        return self._run(sx.cancel_subscription(subscription, at_period_end, idempotency_key))

    # --- tips ------------------------------------------------------------------------------

    def tip(
        self,
        customer: str,
        amount_micros: int,
        *,
        note: str = "",
        item: str | None = None,
        idempotency_key: str | None = None,
    ) -> x.Tip:
        """Tip the merchant from the customer's wallet or tab; ``item`` names what the tip is
        for (a tip for an item with a revenue split is split like its sales). Retrying with
        the same ``idempotency_key`` tips once."""
        return self._run(sx.tip(customer, amount_micros, note, item, idempotency_key))

    # --- usage -----------------------------------------------------------------------------

    def put_meter(self, meter: str, unit_price_micros: int) -> x.Meter:
        return self._run(sx.put_meter(meter, unit_price_micros))

    def get_meter(self, meter: str) -> x.Meter:
        return self._run(sx.get_meter(meter))

    def record_usage(
        self, customer: str, meter: str, quantity: int, *, idempotency_key: str | None = None
    ) -> x.UsageEvent:
        """One usage event; retrying with the same ``idempotency_key`` records it once."""
        return self._run(sx.record_usage(customer, meter, quantity, idempotency_key))

    def usage_page(
        self, cursor: str | None = None, limit: int | None = None, *, customer: str | None = None
    ) -> Page[x.UsageEvent]:
        return self._run(sx.usage_page(cursor, limit, customer))

    def list_usage(
        self, *, customer: str | None = None, page_size: int | None = None
    ) -> Iterator[x.UsageEvent]:
        return self._walk(lambda cursor: sx.usage_page(cursor, page_size, customer))

    # --- payment methods and gift cards ----------------------------------------------------

    def attach_payment_method(
        self,
        customer: str,
        payment_method_token: str,
        *,
        processor_customer_token: str | None = None,
        idempotency_key: str | None = None,
    ) -> m.Customer:
        """Attach the processor's token for a card (never a card number)."""
        return self._run(
            sx.attach_payment_method(
                customer, payment_method_token, processor_customer_token, idempotency_key
            )
        )

    def detach_payment_method(self, customer: str) -> m.Customer:
        return self._run(sx.detach_payment_method(customer))

    def issue_gift_cards(
        self,
        count: int,
        value_micros: int,
        currency: str,
        *,
        expires_at_us: int = 0,
        idempotency_key: str | None = None,
    ) -> x.GiftCardBatch:
        """Operator key only: platform gift cards; the codes are in this answer only."""
        return self._run(
            sx.issue_gift_cards(count, value_micros, currency, expires_at_us, idempotency_key)
        )

    def redeem_gift_card(
        self, customer: str, code: str, *, idempotency_key: str | None = None
    ) -> x.GiftCardRedemption:
        return self._run(sx.redeem_gift_card(customer, code, idempotency_key))

    # --- payouts -------------------------------------------------------------------------

    def create_payee(
        self,
        name: str,
        currency: str,
        destination_token: str,
        *,
        schedule: str = "weekly",
        threshold_micros: int | None = None,
        hold_s: int | None = None,
        idempotency_key: str | None = None,
    ) -> x.Payee:
        """Operator key only: a payee (unverified until its bank account is confirmed)."""
        return self._run(
            sx.create_payee(
                name,
                currency,
                destination_token,
                schedule,
                threshold_micros,
                hold_s,
                idempotency_key,
            )
        )

    def get_payee(self, payee: str) -> x.Payee:
        return self._run(sx.get_payee(payee))

    def payee_balances(self, payee: str) -> x.PayeeBalances:
        return self._run(sx.payee_balances(payee))

    def payouts_page(
        self, payee: str, cursor: str | None = None, limit: int | None = None
    ) -> Page[x.Payout]:
        return self._run(sx.payouts_page(payee, cursor, limit))

    def list_payouts(self, payee: str, *, page_size: int | None = None) -> Iterator[x.Payout]:
        return self._walk(lambda cursor: sx.payouts_page(payee, cursor, page_size))

    def put_split(self, item_ref: str, shares: list[tuple[str, int]]) -> x.Split:
        """Who shares the item's proceeds: (payee id, basis points) summing to 10,000."""
        return self._run(sx.put_split(item_ref, shares))

    def get_split(self, item_ref: str) -> x.Split:
        return self._run(sx.get_split(item_ref))
