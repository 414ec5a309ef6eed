"""What micropay asks of a card processor, and what it answers. Pure data.

micropay never sees a card number: a customer's card lives at the processor,
and micropay holds only the processor's tokens (a customer reference and a
payment-method reference). Every request carries an idempotency key derived
from micropay's own ids, so retrying after a timeout can never charge twice.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field

idempotency_key_chars_max = 255
description_chars_max = 500
metadata_entries_max = 20


class Outcome(enum.Enum):
    """How a processor call ended.

    - ``succeeded``: money moved (or was scheduled to).
    - ``declined``: refused for good (card declined, insufficient funds): do not retry.
    - ``retry``: not known to have happened (timeout, reset, 5xx, 429): retry with
      the *same* idempotency key; the processor returns the first result if it did.
    """

    succeeded = "succeeded"
    declined = "declined"
    retry = "retry"


@dataclass(frozen=True, slots=True)
class ChargeRequest:
    idempotency_key: str
    customer_token: str
    payment_method_token: str
    amount_minor: int
    currency: str
    description: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class ChargeResult:
    outcome: Outcome
    charge_id: str = ""
    amount_minor: int = 0
    decline_code: str = ""
    message: str = ""
    retry_after_s: float = 0.0


@dataclass(frozen=True, slots=True)
class RefundRequest:
    idempotency_key: str
    charge_id: str
    amount_minor: int
    currency: str


@dataclass(frozen=True, slots=True)
class RefundResult:
    outcome: Outcome
    refund_id: str = ""
    amount_minor: int = 0
    message: str = ""


@dataclass(frozen=True, slots=True)
class PayoutRequest:
    idempotency_key: str
    destination_token: str
    amount_minor: int
    currency: str
    description: str = ""


@dataclass(frozen=True, slots=True)
class PayoutResult:
    outcome: Outcome
    payout_id: str = ""
    amount_minor: int = 0
    message: str = ""


class EventKind(enum.Enum):
    charge_succeeded = "charge_succeeded"
    charge_failed = "charge_failed"
    charge_refunded = "charge_refunded"
    dispute_created = "dispute_created"
    dispute_closed = "dispute_closed"
    payout_paid = "payout_paid"
    payout_failed = "payout_failed"
    other = "other"


@dataclass(frozen=True, slots=True)
class ProcessorEvent:
    """A verified event from the processor (its signature and timestamp already checked)."""

    event_id: str
    kind: EventKind
    created_s: int
    object_id: str  # the charge, refund, dispute or payout the event is about
    charge_id: str = ""
    amount_minor: int = 0
    currency: str = ""
    status: str = ""


class EventRejected(ValueError):
    """An incoming event failed verification: bad signature, stale, or from the future."""
