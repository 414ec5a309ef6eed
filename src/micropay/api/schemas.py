"""Request and response bodies of the HTTP API: their own classes, never table rows.

Requests are strict (a float or a string is not an integer amount) and refuse
unknown fields (no mass assignment). Amounts travel as integer micros; responses
also carry them as decimal strings in currency units.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from micropay.core import limits
from micropay.core.currencies import CURRENCY_EXPONENTS
from micropay.payments.gift_cards import code_chars_max, gift_card_value_micros_max
from micropay.payments.models import (
    access_period_s_max,
    price_micros_max,
    topup_micros_max_default,
    topup_micros_min_default,
)

_strict = ConfigDict(extra="forbid", strict=True)

Currency = Annotated[str, StringConstraints(pattern=f"^({'|'.join(sorted(CURRENCY_EXPONENTS))})$")]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
ItemRef = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9._:-]{1,128}$")]
CustomerId = Annotated[str, StringConstraints(pattern=r"^cus_[0-9a-f]{16}$")]
PurchaseId = Annotated[str, StringConstraints(pattern=r"^pur_[1-9][0-9]{0,18}$")]
Token = Annotated[str, StringConstraints(max_length=255, pattern=r"^[A-Za-z0-9_\-.:]*$")]
Micros = Annotated[int, Field(gt=0, le=limits.amount_micros_max)]
Source = Literal["wallet", "tab", "direct"]
Mode = Literal["test", "live"]


def _refuse_card_like(value: str) -> str:
    digits = sum(ch.isdigit() for ch in value)
    if digits >= 12 and value.replace("-", "").replace(" ", "").isdigit():
        raise ValueError("processor tokens only: never send card numbers")
    return value


class Problem(BaseModel):
    code: str
    message: str
    request_id: str


class ErrorEnvelope(BaseModel):
    error: Problem


class Health(BaseModel):
    status: str


class ProcessorEventOut(BaseModel):
    """What an incoming processor event did (each event applies once; a redelivery replays)."""

    event_id: str
    kind: str
    status: str  # applied | ignored
    effect: str
    replayed: bool


# --- merchants and keys ---------------------------------------------------------


class MerchantCreate(BaseModel):
    model_config = _strict
    name: Name
    currency: Currency
    mode: Mode = "test"
    funding_policy: list[Source] = Field(
        default=["wallet", "tab", "direct"], min_length=1, max_length=3
    )


class MerchantOut(BaseModel):
    id: str
    name: str
    currency: str
    mode: str
    funding_policy: list[str]


class KeyOut(BaseModel):
    id: str
    kind: str
    mode: str
    created_at_us: int
    revoked: bool


class KeyCreated(BaseModel):
    key: KeyOut
    token: str | None = Field(
        description="The key itself: shown once, store it now (null in a replayed answer)."
    )


class MerchantCreated(BaseModel):
    merchant: MerchantOut
    secret_key: KeyCreated


class KeyCreate(BaseModel):
    model_config = _strict
    kind: Literal["secret", "publishable"]


class KeyList(BaseModel):
    data: list[KeyOut]


# --- customers and items ----------------------------------------------------------


class CustomerCreate(BaseModel):
    model_config = _strict
    payment_method_token: Token = ""
    processor_customer_token: Token = ""

    _no_cards = field_validator("payment_method_token", "processor_customer_token")(
        _refuse_card_like
    )


class CustomerOut(BaseModel):
    id: str
    currency: str
    tab_limit_micros: int
    tab_limit: str
    tab_state: str
    has_payment_method: bool


class CustomerList(BaseModel):
    data: list[CustomerOut]
    has_more: bool
    next_cursor: str | None


class ItemPut(BaseModel):
    # A consumable item (a price per use) grants no access period: said in the
    # schema too, so clients and generated tests know before they ask.
    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={
            "if": {"properties": {"consumable": {"const": True}}, "required": ["consumable"]},
            "then": {"properties": {"access_period_s": {"const": 0}}},
        },
    )
    name: Name
    price_micros: Annotated[int, Field(gt=0, le=price_micros_max)]
    access_period_s: Annotated[int, Field(ge=0, le=access_period_s_max)] = 0
    # A price per use: every purchase charges again and grants nothing lasting
    # (an API call, a download); needs access_period_s 0.
    consumable: bool = False


class ItemOut(BaseModel):
    item_ref: str
    name: str
    price_micros: int
    price: str
    currency: str
    access_period_s: int
    consumable: bool


# --- money movements ---------------------------------------------------------------


class TopUpCreate(BaseModel):
    model_config = _strict
    # Whole cents within the platform's default top-up limits.
    amount_micros: Annotated[
        int,
        Field(ge=topup_micros_min_default, le=topup_micros_max_default, multiple_of=10_000),
    ]


class TopUpOut(BaseModel):
    id: str
    status: str
    customer: str
    amount_micros: int
    amount: str
    currency: str


class PurchaseCreate(BaseModel):
    model_config = _strict
    customer: CustomerId
    item: ItemRef
    price_micros: Annotated[int, Field(gt=0, le=price_micros_max)] | None = None
    currency: Currency | None = None


class PurchaseOut(BaseModel):
    id: str | None
    status: str
    customer: str
    item: str
    funding: str | None
    price_micros: int
    price: str
    currency: str
    fee_micros: int
    entitlement_ends_at_us: int
    message: str


class PurchaseList(BaseModel):
    data: list[PurchaseOut]
    has_more: bool
    next_cursor: str | None


class StoreCreditIssue(BaseModel):
    model_config = _strict
    count: Annotated[int, Field(ge=1, le=100)]
    value_micros: Annotated[int, Field(gt=0, le=gift_card_value_micros_max)]


class StoreCreditIssued(BaseModel):
    batch: str
    status: str
    value_micros: int
    value: str
    currency: str
    codes: list[str]  # shown once; a replay of this request shows none


class PosRedeem(BaseModel):
    model_config = _strict
    code: Annotated[
        str,
        StringConstraints(min_length=1, max_length=code_chars_max, pattern=r"^[0-9A-Za-z -]+$"),
    ]
    amount_micros: Annotated[int, Field(gt=0, le=gift_card_value_micros_max)]


class PosRedeemed(BaseModel):
    status: str
    amount_micros: int
    amount: str
    remaining_micros: int
    remaining: str
    replayed: bool


class RefundCreate(BaseModel):
    model_config = _strict
    amount_micros: Micros
    destination: Literal["original", "wallet"] = "original"


class RefundOut(BaseModel):
    id: str
    status: str
    purchase: str
    amount_micros: int
    amount: str
    destination: str


class EntitlementOut(BaseModel):
    customer: str
    item: str
    active: bool
    token: str | None


class EntitlementKey(BaseModel):
    kid: str
    alg: str
    public_key_pem: str


class EntitlementKeys(BaseModel):
    keys: list[EntitlementKey]
