"""Bodies of the payees, splits, balances and payouts API: strict requests, own responses."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from micropay.api.schemas import Currency, Name
from micropay.payouts.splits import bps_whole, fee_fixed_micros_max, split_parts_max
from micropay.service.payouts import destination_token_chars_max, hold_s_default, hold_s_max
from micropay.service.payouts import payout_threshold_micros_default as threshold_default

_strict = ConfigDict(extra="forbid", strict=True)
PayeeId = r"^pay_[0-9a-f]{16}$"
PayoutId = r"^po_[1-9][0-9]{0,18}$"


class PayeeCreate(BaseModel):
    """``destination_token`` is the processor's token for the payee's bank account."""

    model_config = _strict
    name: Name
    currency: Currency
    destination_token: Annotated[
        str,
        StringConstraints(
            min_length=1, max_length=destination_token_chars_max, pattern=r"^[A-Za-z0-9_\-.:]+$"
        ),
    ]
    schedule: Literal["daily", "weekly", "monthly", "manual"] = "weekly"
    threshold_micros: int = Field(default=threshold_default, gt=0, le=2**62)
    hold_s: int = Field(default=hold_s_default, ge=0, le=hold_s_max)


class PayeeOut(BaseModel):
    id: str
    name: str
    currency: str
    verified: bool
    schedule: str
    threshold_micros: int
    hold_s: int


class BalancesOut(BaseModel):
    """Credit-normal balances: negative ``available`` is a debt later earnings repay."""

    payee: str
    currency: str
    pending_micros: int  # still in its holding period
    available_micros: int  # paid out at the next run at or above the threshold
    deposits_micros: int  # verification micro-deposits not yet taken back


class PayoutOut(BaseModel):
    id: str
    payee: str
    purpose: str  # earnings | micro_deposit
    period_key: str
    amount_micros: int
    amount: str
    currency: str
    status: str  # pending | succeeded | declined
    created_at_us: int
    updated_at_us: int


class PayoutList(BaseModel):
    data: list[PayoutOut]
    has_more: bool
    next_cursor: str | None


class ShareIn(BaseModel):
    model_config = _strict
    payee: Annotated[str, StringConstraints(pattern=PayeeId)]
    share_bps: int = Field(gt=0, le=bps_whole)


class SplitPut(BaseModel):
    """Who shares the item's proceeds after the platform fee: basis points summing to 10,000."""

    model_config = _strict
    shares: list[ShareIn] = Field(min_length=1, max_length=split_parts_max)


class ShareOut(BaseModel):
    payee: str
    share_bps: int


class SplitOut(BaseModel):
    item_ref: str
    shares: list[ShareOut]


class PlatformFeePut(BaseModel):
    """The platform's cut of each of the merchant's sales: ``fee_bps`` of the price plus
    ``fixed_micros`` (never more than the sale)."""

    model_config = _strict
    fee_bps: int = Field(default=0, ge=0, le=bps_whole)
    fixed_micros: int = Field(default=0, ge=0, le=fee_fixed_micros_max)


class PlatformFeeOut(BaseModel):
    merchant: str
    fee_bps: int
    fixed_micros: int
