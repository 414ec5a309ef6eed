"""What the SDK returns for webhooks, events, tabs, subscriptions, usage and gift cards.

Small frozen dataclasses built explicitly from the API's JSON; unknown fields
are ignored. Secrets and gift card codes are shown once and never in ``repr``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class WebhookEndpoint:
    id: str
    url: str
    events: tuple[str, ...]
    mode: str
    enabled: bool
    disabled_reason: str | None
    created_at_us: int
    updated_at_us: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WebhookEndpoint:
        return cls(
            d["id"],
            d["url"],
            tuple(d["events"]),
            d["mode"],
            d["enabled"],
            d["disabled_reason"],
            d["created_at_us"],
            d["updated_at_us"],
        )


@dataclass(frozen=True, slots=True)
class WebhookEndpointCreated:
    """``secret`` signs the deliveries: shown once (``None`` in a replayed answer)."""

    endpoint: WebhookEndpoint
    secret: str | None = field(repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> WebhookEndpointCreated:
        return cls(WebhookEndpoint.from_json(d["endpoint"]), d.get("secret"))


@dataclass(frozen=True, slots=True)
class DeliveryAttempt:
    attempt: int
    status_code: int | None
    latency_us: int
    error: str
    attempted_at_us: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> DeliveryAttempt:
        return cls(
            d["attempt"], d["status_code"], d["latency_us"], d["error"], d["attempted_at_us"]
        )


@dataclass(frozen=True, slots=True)
class Delivery:
    id: str
    event: str
    endpoint: str
    state: str
    attempts: int
    last_status: int | None
    log: tuple[DeliveryAttempt, ...]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Delivery:
        return cls(
            d["id"],
            d["event"],
            d["endpoint"],
            d["state"],
            d["attempts"],
            d["last_status"],
            tuple(DeliveryAttempt.from_json(a) for a in d["log"]),
        )


@dataclass(frozen=True, slots=True)
class Event:
    id: str
    type: str
    created_at_us: int
    payload: dict[str, Any]

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Event:
        return cls(d["id"], d["type"], d["created_at_us"], dict(d["payload"]))


@dataclass(frozen=True, slots=True)
class Tab:
    customer: str
    currency: str
    state: str
    limit_micros: int
    owed_micros: int
    owed: str
    period_started_at_us: int
    period_ends_at_us: int
    settlement_pending: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Tab:
        return cls(
            d["customer"],
            d["currency"],
            d["state"],
            d["limit_micros"],
            d["owed_micros"],
            d["owed"],
            d["period_started_at_us"],
            d["period_ends_at_us"],
            d["settlement_pending"],
        )


@dataclass(frozen=True, slots=True)
class TabSettlement:
    status: str  # succeeded | pending | nothing_owed
    charge: str | None
    amount_micros: int
    tab: Tab

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> TabSettlement:
        return cls(d["status"], d["charge"], d["amount_micros"], Tab.from_json(d["tab"]))


@dataclass(frozen=True, slots=True)
class Plan:
    plan_ref: str
    name: str
    period: str
    price_micros: int
    currency: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Plan:
        return cls(d["plan_ref"], d["name"], d["period"], d["price_micros"], d["currency"])


@dataclass(frozen=True, slots=True)
class Subscription:
    id: str
    customer: str
    plan: str
    state: str
    cancel_at_period_end: bool
    price_micros: int
    currency: str
    period_number: int
    period_starts_at_us: int
    period_ends_at_us: int
    funding: str | None

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Subscription:
        return cls(
            d["id"],
            d["customer"],
            d["plan"],
            d["state"],
            d["cancel_at_period_end"],
            d["price_micros"],
            d["currency"],
            d["period_number"],
            d["period_starts_at_us"],
            d["period_ends_at_us"],
            d.get("funding"),
        )


@dataclass(frozen=True, slots=True)
class Meter:
    meter: str
    unit_price_micros: int
    currency: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Meter:
        return cls(d["meter"], d["unit_price_micros"], d["currency"])


@dataclass(frozen=True, slots=True)
class Tip:
    """A tip; ``item`` is what it was for (None: the merchant at large)."""

    id: str
    customer: str
    amount_micros: int
    currency: str
    funding: str
    note: str
    item: str | None
    replayed: bool = False

    @classmethod
    def from_json(cls, d: dict[str, Any], replayed: bool = False) -> Tip:
        return cls(
            d["id"],
            d["customer"],
            d["amount_micros"],
            d["currency"],
            d["funding"],
            d["note"],
            d.get("item"),
            replayed,
        )


@dataclass(frozen=True, slots=True)
class UsageEvent:
    id: str
    customer: str
    meter: str
    quantity: int
    amount_micros: int
    occurred_at_us: int
    billed: bool
    replayed: bool = False

    @classmethod
    def from_json(cls, d: dict[str, Any], replayed: bool = False) -> UsageEvent:
        return cls(
            d["id"],
            d["customer"],
            d["meter"],
            d["quantity"],
            d["amount_micros"],
            d["occurred_at_us"],
            d["billed"],
            replayed,
        )


@dataclass(frozen=True, slots=True)
class GiftCardBatch:
    """``codes`` are shown once (empty in a replayed answer) and never in repr."""

    batch: str
    value_micros: int
    currency: str
    expires_at_us: int
    codes: tuple[str, ...] = field(repr=False)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GiftCardBatch:
        return cls(
            d["batch"], d["value_micros"], d["currency"], d["expires_at_us"], tuple(d["codes"])
        )


@dataclass(frozen=True, slots=True)
class GiftCardRedemption:
    customer: str
    amount_micros: int
    currency: str
    destination: str  # wallet | store_credit
    replayed: bool

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> GiftCardRedemption:
        return cls(
            d["customer"], d["amount_micros"], d["currency"], d["destination"], d["replayed"]
        )


@dataclass(frozen=True, slots=True)
class Payee:
    id: str
    name: str
    currency: str
    verified: bool
    schedule: str
    threshold_micros: int
    hold_s: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Payee:
        return cls(
            d["id"],
            d["name"],
            d["currency"],
            d["verified"],
            d["schedule"],
            d["threshold_micros"],
            d["hold_s"],
        )


@dataclass(frozen=True, slots=True)
class PayeeBalances:
    payee: str
    currency: str
    pending_micros: int
    available_micros: int
    deposits_micros: int

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> PayeeBalances:
        return cls(
            d["payee"],
            d["currency"],
            d["pending_micros"],
            d["available_micros"],
            d["deposits_micros"],
        )


@dataclass(frozen=True, slots=True)
class Payout:
    id: str
    payee: str
    purpose: str
    period_key: str
    amount_micros: int
    currency: str
    status: str

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Payout:
        return cls(
            d["id"],
            d["payee"],
            d["purpose"],
            d["period_key"],
            d["amount_micros"],
            d["currency"],
            d["status"],
        )


@dataclass(frozen=True, slots=True)
class Split:
    item_ref: str
    shares: tuple[tuple[str, int], ...]  # (payee id, basis points)

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Split:
        return cls(d["item_ref"], tuple((s["payee"], s["share_bps"]) for s in d["shares"]))
