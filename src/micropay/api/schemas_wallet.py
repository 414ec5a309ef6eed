"""Bodies of the payment method and gift card API: strict requests, their own response classes."""

from __future__ import annotations

from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator

from micropay.api.schemas import Currency, _refuse_card_like
from micropay.payments.gift_cards import code_chars_max, gift_card_value_micros_max

_strict = ConfigDict(extra="forbid", strict=True)
ProcessorToken = Annotated[
    str, StringConstraints(min_length=1, max_length=255, pattern=r"^[A-Za-z0-9_\-.:]+$")
]
GiftCode = Annotated[
    str,
    StringConstraints(min_length=1, max_length=code_chars_max, pattern=r"^[0-9A-Za-z -]+$"),
]


class PaymentMethodAttach(BaseModel):
    """A processor's token for a card (``pm_...``): never a card number."""

    model_config = _strict
    payment_method_token: ProcessorToken
    processor_customer_token: ProcessorToken | None = None  # keep the current one if absent

    _no_cards = field_validator("payment_method_token", "processor_customer_token")(
        lambda v: v if v is None else _refuse_card_like(v)
    )


class GiftCardsIssue(BaseModel):
    model_config = _strict
    count: Annotated[int, Field(ge=1, le=100)]
    value_micros: Annotated[int, Field(gt=0, le=gift_card_value_micros_max)]
    currency: Currency
    expires_at_us: Annotated[int, Field(ge=0, le=2**63 - 1)] = 0  # 0: never


class GiftCardsIssued(BaseModel):
    batch: str
    status: str
    value_micros: int
    value: str
    currency: str
    expires_at_us: int
    codes: list[str]  # shown once; a replay of this request shows none


class GiftCardRedeem(BaseModel):
    model_config = _strict
    code: GiftCode


class GiftCardRedeemed(BaseModel):
    """``destination``: wallet (a platform card) or store_credit (at the issuing merchant)."""

    status: str
    customer: str
    amount_micros: int
    amount: str
    currency: str
    destination: str
    replayed: bool
