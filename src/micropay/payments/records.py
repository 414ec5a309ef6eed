"""Rows the payment models keep beside the ledger: purchases, charges, entitlements."""

from __future__ import annotations

import enum
from dataclasses import dataclass

from micropay.payments.models import FundingSource


class ChargePurpose(enum.Enum):
    topup = "topup"
    tab = "tab"
    direct = "direct"


class ChargeStatus(enum.Enum):
    pending = "pending"  # asked or about to be asked; completes (or retries) later
    succeeded = "succeeded"
    declined = "declined"


@dataclass(frozen=True, slots=True)
class PurchaseRecord:
    id: int
    merchant_id: int
    customer_id: int
    item_ref: str
    price_micros: int
    currency: str
    funding: FundingSource
    status: str  # a PurchaseStatus value
    transfer_id: int | None
    charge_id: int | None
    idempotency_key: str
    request_hash: str
    refunded_micros: int
    created_at_us: int


@dataclass(frozen=True, slots=True)
class ChargeRecord:
    id: int
    customer_id: int
    purpose: str  # a ChargePurpose value
    client_key: str | None
    request_hash: str
    amount_micros: int
    currency: str
    fee_micros: int
    schedule: str
    status: str  # a ChargeStatus value
    processor_charge_id: str
    decline_code: str
    attempts: int
    next_attempt_at_us: int
    purchase_id: int
    created_at_us: int
    updated_at_us: int


@dataclass(frozen=True, slots=True)
class EntitlementRecord:
    id: int
    merchant_id: int
    customer_id: int
    item_ref: str
    purchase_id: int
    starts_at_us: int
    ends_at_us: int  # 0: forever
    revoked: bool


@dataclass(frozen=True, slots=True)
class RefundRecord:
    id: int
    purchase_id: int
    idempotency_key: str
    request_hash: str
    amount_micros: int
    destination: str  # "wallet" | "tab" | "card"
    status: str  # "pending" | "succeeded" | "declined"
    transfer_id: int | None
    processor_refund_id: str
    created_at_us: int
