"""Webhooks out: an outbox written with each change, signed at-least-once delivery, SSRF checks."""

from micropay.webhooks.delivery import (
    DeliveryOutcome,
    EndpointRefusal,
    EndpointResult,
    Webhooks,
    register_webhook_jobs,
)
from micropay.webhooks.outbox import EVENT_TYPES, Outbox, attach, webhooks_tx
from micropay.webhooks.ssrf import UrlCheck, UrlRefusal, check_url

__all__ = [
    "EVENT_TYPES",
    "DeliveryOutcome",
    "EndpointRefusal",
    "EndpointResult",
    "Outbox",
    "UrlCheck",
    "UrlRefusal",
    "Webhooks",
    "attach",
    "check_url",
    "register_webhook_jobs",
    "webhooks_tx",
]
