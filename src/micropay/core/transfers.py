"""Transfers: immutable movements of an amount between two accounts.

Kinds, chosen by flags:

- **single** (no flag): moves ``amount_micros`` at once.
- **pending** (``PENDING``): a hold. It reserves the amount on both accounts'
  pending counters until posted, voided, or expired (``timeout_s`` > 0).
- **post** (``POST_PENDING`` with ``pending_id``): posts a hold, in full
  (``amount_micros`` 0) or in part (any amount up to the hold); the rest of the
  hold is released.
- **void** (``VOID_PENDING``): releases a hold; ``amount_micros`` 0 or equal to
  the hold.
- **expire** (``EXPIRE_PENDING``): releases a hold whose timeout has passed;
  submitted by the expiry job, refused before the hold's expiry time.

For post, void and expire, account ids and currency may be 0/"" (taken from
the hold) or must equal the hold's. The stored transfer holds the resolved
values. ``LINKED`` chains a transfer to the next one in the batch: the chain
applies all or nothing.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import NamedTuple

from micropay.core.statuses import TransferStatus


class TransferFlags(enum.IntFlag):
    NONE = 0
    LINKED = 1
    PENDING = 2
    POST_PENDING = 4
    VOID_PENDING = 8
    EXPIRE_PENDING = 16


TRANSFER_FLAGS_KNOWN = int(
    TransferFlags.LINKED
    | TransferFlags.PENDING
    | TransferFlags.POST_PENDING
    | TransferFlags.VOID_PENDING
    | TransferFlags.EXPIRE_PENDING
)
RESOLVING_FLAGS = int(
    TransferFlags.POST_PENDING | TransferFlags.VOID_PENDING | TransferFlags.EXPIRE_PENDING
)
KIND_FLAGS = RESOLVING_FLAGS | int(TransferFlags.PENDING)


@dataclass(frozen=True, slots=True)
class Transfer:
    """A transfer request. ``id`` doubles as its idempotency key."""

    id: int
    debit_account_id: int
    credit_account_id: int
    amount_micros: int
    currency: str
    code: int = 0
    flags: int = 0
    pending_id: int = 0
    timeout_s: int = 0
    reference: str = ""
    metadata: str = ""


@dataclass(frozen=True, slots=True)
class StoredTransfer:
    """A transfer as the ledger recorded it (resolved values for post/void/expire)."""

    id: int
    debit_account_id: int
    credit_account_id: int
    amount_micros: int
    currency: str
    code: int
    flags: int
    pending_id: int
    timeout_s: int
    reference: str
    metadata: str
    created_at_us: int
    expires_at_us: int  # 0 when the transfer is not a hold with a timeout

    def matches(self, request: Transfer) -> bool:
        """True when ``request`` asks for the effect this transfer recorded.

        Fields that a post/void/expire may leave to the hold (0 or "") match the
        resolved value, and a full post (amount 0) matches the posted amount.
        """
        resolving = request.flags & RESOLVING_FLAGS
        return (
            request.flags == self.flags
            and request.pending_id == self.pending_id
            and request.code == self.code
            and request.timeout_s == self.timeout_s
            and request.reference == self.reference
            and request.metadata == self.metadata
            and _same(request.debit_account_id, self.debit_account_id, resolving, 0)
            and _same(request.credit_account_id, self.credit_account_id, resolving, 0)
            and _same(request.currency, self.currency, resolving, "")
            and _same(request.amount_micros, self.amount_micros, resolving, 0)
        )


@dataclass(frozen=True, slots=True)
class Rejection:
    """A remembered failure: the request as sent, and the status it got."""

    request: Transfer
    status: TransferStatus
    created_at_us: int


class TransferResult(NamedTuple):
    """The outcome of one transfer request.

    A named tuple (immutable, compared by value) rather than a dataclass: the
    ledger returns one per transfer, and a batch's thousand results are built
    in one C-level pass on the fast path.
    """

    id: int
    status: TransferStatus
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status is TransferStatus.ok


def _same(asked: object, stored: object, resolving: int, inherit: object) -> bool:
    return asked == stored or (bool(resolving) and asked == inherit)
