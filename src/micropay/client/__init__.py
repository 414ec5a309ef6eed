"""The micropay Python SDK: typed, sync (:class:`Client`) and async (:class:`AsyncClient`).

Built on ``httpx`` (the public package every application already has; the
``httpx2`` fork in the dev extras only serves starlette's TestClient)::

    from micropay.client import Client

    with Client("mp_sk_test_...", "http://127.0.0.1:8000") as mp:
        reader = mp.create_customer(payment_method_token="pm_card_ok")
        mp.put_item("article-1", "An article", 250_000)
        mp.top_up(reader.id, 5_000_000)
        receipt = mp.purchase(reader.id, "article-1")
        assert mp.check_entitlement(reader.id, "article-1").active

Every POST carries an ``Idempotency-Key`` (uuid4 unless you pass
``idempotency_key=``), reused across the SDK's own retries, so a retried
purchase never charges twice. Refusals raise :class:`MicropayError`
subclasses carrying ``code``, ``message``, ``request_id`` and ``status``.
The SDK imports nothing from the server side of micropay.
"""

from __future__ import annotations

from micropay.client._async import AsyncClient
from micropay.client._core import NO_RETRIES, RetryPolicy
from micropay.client._specs import Page
from micropay.client._sync import Client
from micropay.client.errors import (
    APIConnectionError,
    AuthenticationError,
    ConflictError,
    InvalidRequestError,
    MicropayError,
    NotFoundError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    ServerError,
)
from micropay.client.models import (
    ApiKey,
    CreatedKey,
    Customer,
    Entitlement,
    EntitlementKey,
    Item,
    Merchant,
    MerchantCreated,
    Purchase,
    Refund,
    TopUp,
)
from micropay.client.models_extra import (
    Delivery,
    DeliveryAttempt,
    Event,
    GiftCardBatch,
    GiftCardRedemption,
    Meter,
    Payee,
    PayeeBalances,
    Payout,
    Plan,
    Split,
    Subscription,
    Tab,
    TabSettlement,
    Tip,
    UsageEvent,
    WebhookEndpoint,
    WebhookEndpointCreated,
)

__all__ = [
    "NO_RETRIES",
    "APIConnectionError",
    "ApiKey",
    "AsyncClient",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "CreatedKey",
    "Customer",
    "Delivery",
    "DeliveryAttempt",
    "Entitlement",
    "EntitlementKey",
    "Event",
    "GiftCardBatch",
    "GiftCardRedemption",
    "InvalidRequestError",
    "Item",
    "Merchant",
    "MerchantCreated",
    "Meter",
    "MicropayError",
    "NotFoundError",
    "Page",
    "Payee",
    "PayeeBalances",
    "PaymentRequiredError",
    "Payout",
    "PermissionDeniedError",
    "Plan",
    "Purchase",
    "RateLimitError",
    "Refund",
    "RetryPolicy",
    "ServerError",
    "Split",
    "Subscription",
    "Tab",
    "TabSettlement",
    "Tip",
    "TopUp",
    "UsageEvent",
    "WebhookEndpoint",
    "WebhookEndpointCreated",
]
