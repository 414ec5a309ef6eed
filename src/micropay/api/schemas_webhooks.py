"""Bodies of the webhook endpoints and events API: strict requests, their own response classes."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from micropay.webhooks.ssrf import url_chars_max

_strict = ConfigDict(extra="forbid", strict=True)

# The outbox's event types (micropay.webhooks.outbox.EVENT_TYPES; a test keeps them equal).
EventType = Literal[
    "purchase.succeeded",
    "refund.succeeded",
    "topup.succeeded",
    "topup.declined",
    "tab.settled",
    "tab.frozen",
]
_PORT = r"6553[0-5]|655[0-2][0-9]|65[0-4][0-9]{2}|6[0-4][0-9]{3}|[1-5][0-9]{4}|[1-9][0-9]{0,3}"
# http(s), a host name or IPv4 address, an optional port, then a path and query.
UrlPattern = rf"^https?://[A-Za-z0-9][A-Za-z0-9.-]*(:({_PORT}))?(/[\x21-\x7e]*)?$"
Url = Annotated[str, StringConstraints(min_length=1, max_length=url_chars_max, pattern=UrlPattern)]
EndpointId = r"^we_[1-9][0-9]{0,17}$"
DeliveryId = r"^whd_[1-9][0-9]{0,17}$"
EventId = r"^msg_[0-9a-f]{24}$"


class WebhookEndpointCreate(BaseModel):
    """An https URL (http, and with the server's switch a private address, in test mode only).

    A URL whose host does not resolve, or resolves to an address the server
    must not reach (loopback, private, link-local, ...), is refused with 403.
    """

    model_config = _strict
    url: Url
    events: list[EventType | Literal["*"]] = Field(default=["*"], min_length=1, max_length=7)


class WebhookEndpointOut(BaseModel):
    id: str
    url: str
    events: list[str]
    mode: str  # test | live
    enabled: bool
    disabled_reason: str | None
    created_at_us: int
    updated_at_us: int


class WebhookEndpointCreated(BaseModel):
    """The signing secret is in the first answer only: a replay shows ``secret: null``."""

    endpoint: WebhookEndpointOut
    secret: str | None


class WebhookEndpointList(BaseModel):
    data: list[WebhookEndpointOut]
    has_more: bool
    next_cursor: str | None


class DeliveryAttemptOut(BaseModel):
    attempt: int
    status_code: int | None
    latency_us: int
    error: str
    attempted_at_us: int


class DeliveryOut(BaseModel):
    id: str
    event: str
    endpoint: str
    state: str  # pending | succeeded | failed | cancelled
    attempts: int
    next_attempt_at_us: int
    last_status: int | None
    created_at_us: int
    finished_at_us: int | None
    log: list[DeliveryAttemptOut]


class DeliveryList(BaseModel):
    data: list[DeliveryOut]
    has_more: bool
    next_cursor: str | None


class EventOut(BaseModel):
    """An outbox event as delivered: ``payload`` is the signed body's JSON."""

    id: str
    type: str
    created_at_us: int
    payload: dict[str, Any]


class EventList(BaseModel):
    data: list[EventOut]
    has_more: bool
    next_cursor: str | None
