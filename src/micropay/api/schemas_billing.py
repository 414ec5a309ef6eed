"""Bodies of the tab, subscription and usage API: strict requests, their own response classes."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from micropay.api.schemas import CustomerId, ItemRef, Name
from micropay.payments.billing import (
    meter_ref_chars_max,
    meter_unit_price_micros_max,
    plan_ref_chars_max,
    time_zone_chars_max,
    tip_note_chars_max,
    usage_quantity_max,
    usage_quantity_min,
)
from micropay.payments.models import price_micros_max

_strict = ConfigDict(extra="forbid", strict=True)

PlanRef = f"^[A-Za-z0-9._:-]{{1,{plan_ref_chars_max}}}$"
MeterRef = f"^[A-Za-z0-9._:-]{{1,{meter_ref_chars_max}}}$"
SubscriptionId = r"^sub_[1-9][0-9]{0,18}$"
UsageId = r"^use_[1-9][0-9]{0,18}$"
TimeZone = Annotated[
    str,
    StringConstraints(min_length=1, max_length=time_zone_chars_max, pattern=r"^[A-Za-z0-9_+\-/]+$"),
]


# --- tabs -----------------------------------------------------------------------------


class TabOut(BaseModel):
    """A customer's post-pay tab: what it may owe, what it owes, and its billing period."""

    customer: str
    currency: str
    state: str  # open | frozen
    limit_micros: int
    limit: str
    owed_micros: int
    owed: str
    period_started_at_us: int
    period_ends_at_us: int
    settlement_pending: str | None  # the charge of a settlement the processor has not answered


class TabSettled(BaseModel):
    """``status``: succeeded, pending (retry with the same key later) or nothing_owed."""

    status: str
    charge: str | None
    amount_micros: int
    amount: str
    tab: TabOut


# --- tips ---------------------------------------------------------------------------------


class TipCreate(BaseModel):
    """A tip of ``amount_micros`` (within the merchant's tip limits) from the wallet or tab;
    the Idempotency-Key header is its key. ``item`` names what the tip is for (one of the
    merchant's items): a tip for an item with a revenue split is split like its sales."""

    model_config = _strict
    customer: CustomerId
    amount_micros: int = Field(gt=0, le=price_micros_max)
    note: Annotated[str, StringConstraints(max_length=tip_note_chars_max)] = ""
    item: ItemRef | None = None


class TipOut(BaseModel):
    id: str
    customer: str
    amount_micros: int
    amount: str
    currency: str
    funding: str  # wallet | tab
    note: str
    item: str | None


# --- subscriptions ------------------------------------------------------------------------


class PlanPut(BaseModel):
    model_config = _strict
    name: Name
    period: Literal["daily", "weekly", "monthly", "yearly"]
    price_micros: int = Field(gt=0, le=price_micros_max)


class PlanOut(BaseModel):
    plan_ref: str
    name: str
    period: str
    price_micros: int
    price: str
    currency: str


class SubscriptionCreate(BaseModel):
    model_config = _strict
    customer: CustomerId
    plan: Annotated[str, StringConstraints(pattern=PlanRef)]
    time_zone: TimeZone = "UTC"


class SubscriptionCancel(BaseModel):
    model_config = _strict
    at_period_end: bool = True


class SubscriptionOut(BaseModel):
    id: str
    customer: str
    plan: str
    state: str  # active | past_due | cancelled
    cancel_at_period_end: bool
    period: str
    price_micros: int
    price: str
    currency: str
    time_zone: str
    period_number: int
    period_starts_at_us: int
    period_ends_at_us: int
    funding: str | None  # what paid the first period (create answers only)


# --- usage --------------------------------------------------------------------------------


class MeterPut(BaseModel):
    model_config = _strict
    unit_price_micros: int = Field(gt=0, le=meter_unit_price_micros_max)


class MeterOut(BaseModel):
    meter: str
    unit_price_micros: int
    currency: str


class UsageCreate(BaseModel):
    """One usage event; the Idempotency-Key header is its key (a retry records nothing more)."""

    model_config = _strict
    customer: CustomerId
    meter: Annotated[str, StringConstraints(pattern=MeterRef)]
    quantity: int = Field(ge=usage_quantity_min, le=usage_quantity_max)


class UsageOut(BaseModel):
    id: str
    customer: str
    meter: str
    quantity: int
    unit_price_micros: int
    amount_micros: int
    occurred_at_us: int
    billed: bool


class UsageList(BaseModel):
    data: list[UsageOut]
    has_more: bool
    next_cursor: str | None
