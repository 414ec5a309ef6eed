"""Manual adjustments by support staff: a ledger transfer plus who did it, why and when.

An adjustment moves money between the platform's ``adjustments`` account and
one other account (a wallet, a tab, a merchant's payable...). A positive amount
credits the target (goodwill credit, a correction in the customer's favour); a
negative amount debits it. Each one is written in ONE database transaction
with its audit row; the audit table is append-only (the database refuses
UPDATE and DELETE). Idempotent per key: the same key and request return the
first result; the same key with a different request is refused.

Outcomes (every refusal writes nothing):

- ``ok``
- ``idempotency_key_invalid`` / ``idempotency_key_reused``
- ``amount_invalid``: not an int, zero, or beyond the 64-bit bound
- ``reason_invalid`` / ``actor_invalid``: missing, too long or not printable
- ``account_not_found``: no such ledger account
- ``account_invalid``: the target is the adjustments account itself
- ``would_overdraw``: the debit would take a wallet (or any account that must not
  overdraw) below zero, or a tab past its credit line
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, cast

from micropay.core import limits
from micropay.core.accounts import AccountFlags, available_micros
from micropay.core.transfers import Transfer
from micropay.payments import chart
from micropay.payments.chart import Kind, Owner
from micropay.payments.models import is_valid_key
from micropay.payments.plans import Code
from micropay.service.charges import LedgerInvariantError, request_hash
from micropay.service.ledger import apply_in_transaction
from micropay.service.ports import PaymentsWriteTx

if TYPE_CHECKING:
    from micropay.service.payments import Payments

reason_chars_min = 3
reason_chars_max = 500
actor_chars_max = 128
history_rows_max = 1_000
ADJUSTMENT_CODE = Code.adjustment


class AdjustmentStatus(enum.Enum):
    ok = "ok"
    idempotency_key_invalid = "idempotency_key_invalid"
    idempotency_key_reused = "idempotency_key_reused"
    amount_invalid = "amount_invalid"
    reason_invalid = "reason_invalid"
    actor_invalid = "actor_invalid"
    account_not_found = "account_not_found"
    account_invalid = "account_invalid"
    would_overdraw = "would_overdraw"


@dataclass(frozen=True, slots=True)
class AdjustmentRecord:
    """One row of the append-only audit log."""

    id: int
    idempotency_key: str
    request_hash: str
    account_id: int
    currency: str
    amount_micros: int  # signed: > 0 credits the account, < 0 debits it
    reason: str
    actor: str
    transfer_id: int
    created_at_us: int


@dataclass(frozen=True, slots=True)
class AdjustmentReceipt:
    status: AdjustmentStatus
    adjustment_id: int = 0
    transfer_id: int = 0
    amount_micros: int = 0
    replayed: bool = False

    @property
    def ok(self) -> bool:
        return self.status is AdjustmentStatus.ok


class AdjustmentsTx(PaymentsWriteTx, Protocol):
    def find_adjustment(self, idempotency_key: str) -> AdjustmentRecord | None: ...
    def insert_adjustment(self, a: AdjustmentRecord) -> None: ...
    def adjustments_for_account(self, account_id: int, limit: int) -> list[AdjustmentRecord]: ...


def _is_text(value: object, chars_min: int, chars_max: int) -> bool:
    return (
        isinstance(value, str)
        and chars_min <= len(value.strip())
        and len(value) <= chars_max
        and value.isprintable()
    )


class Adjustments:
    def __init__(self, payments: Payments) -> None:
        self.payments = payments

    def adjust(
        self,
        owner: Owner,
        owner_id: int,
        kind: Kind,
        currency: str,
        amount_micros: int,
        *,
        reason: str,
        actor: str,
        idempotency_key: str,
    ) -> AdjustmentReceipt:
        """Credit (``amount_micros`` > 0) or debit (< 0) one account, recording who and why."""
        if not is_valid_key(idempotency_key):
            return AdjustmentReceipt(AdjustmentStatus.idempotency_key_invalid)
        if (
            type(amount_micros) is not int
            or amount_micros == 0
            or abs(amount_micros) > limits.amount_micros_max
        ):
            return AdjustmentReceipt(AdjustmentStatus.amount_invalid)
        if not _is_text(reason, reason_chars_min, reason_chars_max):
            return AdjustmentReceipt(AdjustmentStatus.reason_invalid)
        if not _is_text(actor, 1, actor_chars_max):
            return AdjustmentReceipt(AdjustmentStatus.actor_invalid)
        if kind is Kind.adjustments:
            return AdjustmentReceipt(AdjustmentStatus.account_invalid)
        try:
            target = chart.account_id(Owner(owner), owner_id, Kind(kind), currency)
        except (ValueError, TypeError):
            return AdjustmentReceipt(AdjustmentStatus.account_not_found)
        fingerprint = request_hash("adjust", target, amount_micros, reason, actor)
        return self.payments.charges.tx(
            lambda tx: self._adjust_in(
                cast(AdjustmentsTx, tx),
                target,
                currency,
                amount_micros,
                reason,
                actor,
                idempotency_key,
                fingerprint,
            )
        )

    def _adjust_in(
        self,
        tx: AdjustmentsTx,
        target: int,
        currency: str,
        amount_micros: int,
        reason: str,
        actor: str,
        key: str,
        fingerprint: str,
    ) -> AdjustmentReceipt:
        existing = tx.find_adjustment(key)
        if existing is not None:
            if existing.request_hash != fingerprint:
                return AdjustmentReceipt(AdjustmentStatus.idempotency_key_reused)
            return AdjustmentReceipt(
                AdjustmentStatus.ok,
                existing.id,
                existing.transfer_id,
                existing.amount_micros,
                replayed=True,
            )
        pool = chart.platform_account(Kind.adjustments, currency)
        accounts = tx.lock_accounts([target, pool])
        account = accounts.get(target)
        if account is None or pool not in accounts:
            return AdjustmentReceipt(AdjustmentStatus.account_not_found)
        guarded = account.flags & AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS
        if amount_micros < 0 and guarded and available_micros(account) < -amount_micros:
            return AdjustmentReceipt(AdjustmentStatus.would_overdraw)
        adjustment_id, now_us = self.payments.new_id(), self.payments.clock()
        debit, credit = (pool, target) if amount_micros > 0 else (target, pool)
        transfer = Transfer(
            self.payments.new_id(),
            debit,
            credit,
            abs(amount_micros),
            currency,
            code=ADJUSTMENT_CODE,
            reference=f"adjustment:{adjustment_id}",
        )
        [result] = apply_in_transaction(tx, [transfer], now_us)
        if not result.ok:
            raise LedgerInvariantError(f"adjustment refused by the ledger: {result.status.value}")
        tx.insert_adjustment(
            AdjustmentRecord(
                adjustment_id,
                key,
                fingerprint,
                target,
                currency,
                amount_micros,
                reason,
                actor,
                transfer.id,
                now_us,
            )
        )
        return AdjustmentReceipt(AdjustmentStatus.ok, adjustment_id, transfer.id, amount_micros)

    def history(self, account_id: int, limit: int = history_rows_max) -> list[AdjustmentRecord]:
        """The audit log of one account, oldest first."""
        bounded = max(1, min(limit, history_rows_max))
        return self.payments.charges.tx(
            lambda tx: cast(AdjustmentsTx, tx).adjustments_for_account(account_id, bounded)
        )
