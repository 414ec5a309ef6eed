"""Payee accounts and the transfer plans of sales, releases, refunds and payouts. Pure.

Each payee has three ledger accounts (all liabilities of the platform, no
balance flag, so ``available`` may go negative: a debt the payee repays from
later earnings before any payout):

- **pending**: earnings still in their holding period. Credited by sale
  shares; debited by their release and by refunds during the hold.
- **available**: earnings the payee may be paid. Credited by releases;
  debited by payouts, refunds after the hold and the micro-deposit take-back.
- **deposits**: micro-deposits sent and not yet taken back. Debited by the
  micro-deposit payouts; credited by the take-back.

Until ``chart.Kind`` grows payee kinds (see the report), the bucket is packed
into the owner number: ``owner_id = bucket << 30 | payee_id``.
"""

from __future__ import annotations

import datetime as dt
import enum
from dataclasses import dataclass, replace

from micropay.core.accounts import NewAccount
from micropay.core.transfers import Transfer, TransferFlags
from micropay.payments import chart
from micropay.payments.chart import Kind, Owner
from micropay.payments.plans import Code
from micropay.payouts.splits import SaleSplit

payee_id_max = 2**30 - 1
_LINKED = int(TransferFlags.LINKED)


class Bucket(enum.IntEnum):
    available = 0
    pending = 1
    deposits = 2


# Payout transfer codes live with all others in ``payments.plans.Code``.
PayoutCode = Code

_BUCKET_KINDS = {
    Bucket.available: Kind.payee_available,
    Bucket.pending: Kind.payee_pending,
    Bucket.deposits: Kind.payee_deposits,
}


def payee_account(payee_id: int, bucket: Bucket, currency: str) -> int:
    if not 0 < payee_id <= payee_id_max:
        raise ValueError("payee id out of range")
    return chart.account_id(Owner.payee, payee_id, _BUCKET_KINDS[bucket], currency)


def payee_accounts(payee_id: int, currency: str) -> list[NewAccount]:
    return [
        NewAccount(
            id=payee_account(payee_id, bucket, currency),
            currency=currency,
            kind=f"payee_{bucket.name}",
            owner_ref=f"payee:{payee_id}",
        )
        for bucket in Bucket
    ]


def sale_plan(
    ids: list[int], merchant_id: int, currency: str, split: SaleSplit, reference: str
) -> list[Transfer]:
    """The merchant's proceeds of one sale: the fee to the platform, shares to payees' pending.

    One linked chain (all or nothing); zero parts are left out. ``ids`` must
    hold one id per part (fee first).
    """
    payable = chart.payable_account(merchant_id, currency)
    legs: list[tuple[int, int, int, int]] = []  # (credit, amount, code, id index)
    if split.fee_micros:
        legs.append(
            (
                chart.platform_account(Kind.platform_revenue, currency),
                split.fee_micros,
                PayoutCode.platform_fee,
                0,
            )
        )
    for n, (payee_id, amount) in enumerate(split.payee_parts, start=1):
        if amount:
            legs.append(
                (
                    payee_account(payee_id, Bucket.pending, currency),
                    amount,
                    PayoutCode.sale_share,
                    n,
                )
            )
    return _chain(
        [
            Transfer(ids[i], payable, credit, amount, currency, code=code, reference=reference)
            for credit, amount, code, i in legs
        ]
    )


def reversal_plan(
    ids: list[int],
    merchant_id: int,
    currency: str,
    fee_micros: int,
    payee_parts: list[tuple[int, Bucket, int]],
    reference: str,
) -> list[Transfer]:
    """A refund takes back from the platform fee and from each payee's pending or available."""
    payable = chart.payable_account(merchant_id, currency)
    transfers = []
    if fee_micros:
        transfers.append(
            Transfer(
                ids[0],
                chart.platform_account(Kind.platform_revenue, currency),
                payable,
                fee_micros,
                currency,
                code=PayoutCode.fee_reversal,
                reference=reference,
            )
        )
    for n, (payee_id, bucket, amount) in enumerate(payee_parts, start=1):
        if amount:
            transfers.append(
                Transfer(
                    ids[n],
                    payee_account(payee_id, bucket, currency),
                    payable,
                    amount,
                    currency,
                    code=PayoutCode.share_reversal,
                    reference=reference,
                )
            )
    return _chain(transfers)


def release_transfer(
    transfer_id: int, payee_id: int, amount_micros: int, currency: str, reference: str
) -> Transfer:
    """Earnings past their holding period become available."""
    return Transfer(
        transfer_id,
        payee_account(payee_id, Bucket.pending, currency),
        payee_account(payee_id, Bucket.available, currency),
        amount_micros,
        currency,
        code=PayoutCode.share_release,
        reference=reference,
    )


def payout_hold(
    transfer_id: int,
    payee_id: int,
    bucket: Bucket,
    amount_micros: int,
    currency: str,
    code: int,
    reference: str,
) -> Transfer:
    """Reserve a payout (from available, or from deposits for a micro-deposit) until it settles.

    Money leaves through the processor, so the credit side is processor clearing.
    """
    return Transfer(
        transfer_id,
        payee_account(payee_id, bucket, currency),
        chart.platform_account(Kind.processor_clearing, currency),
        amount_micros,
        currency,
        code=code,
        flags=int(TransferFlags.PENDING),
        reference=reference,
    )


def resolve_hold(
    transfer_id: int, hold_id: int, code: int, reference: str, *, paid: bool
) -> Transfer:
    """Post the hold when the processor paid, void it when it declined."""
    flag = TransferFlags.POST_PENDING if paid else TransferFlags.VOID_PENDING
    return Transfer(
        transfer_id,
        0,
        0,
        0,
        "",
        code=code,
        flags=int(flag),
        pending_id=hold_id,
        reference=reference,
    )


def take_back_transfer(
    transfer_id: int, payee_id: int, amount_micros: int, currency: str, reference: str
) -> Transfer:
    """Micro-deposits, once confirmed, are taken back from the payee's earnings."""
    return Transfer(
        transfer_id,
        payee_account(payee_id, Bucket.available, currency),
        payee_account(payee_id, Bucket.deposits, currency),
        amount_micros,
        currency,
        code=PayoutCode.micro_deposit_return,
        reference=reference,
    )


def _chain(transfers: list[Transfer]) -> list[Transfer]:
    return [
        replace(t, flags=t.flags | _LINKED) if i < len(transfers) - 1 else t
        for i, t in enumerate(transfers)
    ]


class Schedule(enum.Enum):
    daily = "daily"
    weekly = "weekly"
    monthly = "monthly"
    manual = "manual"  # paid only on request


def period_key(schedule: Schedule, now_us: int) -> str:
    """The schedule period ``now_us`` falls in (UTC): a payee is paid at most once per period."""
    day = dt.datetime.fromtimestamp(now_us // 1_000_000, tz=dt.UTC).date()
    if schedule is Schedule.daily:
        return day.isoformat()
    if schedule is Schedule.weekly:
        year, week, _ = day.isocalendar()
        return f"{year}-W{week:02d}"
    if schedule is Schedule.monthly:
        return f"{day.year}-{day.month:02d}"
    raise ValueError("a manual schedule has no periods")


@dataclass(frozen=True, slots=True)
class Payee:
    id: int
    public_id: str
    name: str
    currency: str
    destination_token: str  # the processor's token for the payee's bank account
    verified: bool
    schedule: Schedule
    threshold_micros: int
    hold_s: int


@dataclass(frozen=True, slots=True)
class SaleShare:
    purchase_id: int
    payee_id: int
    position: int
    amount_micros: int
    reversed_micros: int
    release_at_us: int
    released: bool


@dataclass(frozen=True, slots=True)
class SaleRecord:
    purchase_id: int
    merchant_id: int
    currency: str
    gross_micros: int
    fee_micros: int
    fee_reversed_micros: int
    refunded_micros: int
    created_at_us: int


@dataclass(frozen=True, slots=True)
class PayoutRecord:
    id: int
    payee_id: int
    purpose: str  # earnings | micro_deposit
    period_key: str
    amount_micros: int
    currency: str
    status: str  # pending | succeeded | declined
    hold_transfer_id: int
    processor_payout_id: str
    created_at_us: int
    updated_at_us: int


@dataclass(frozen=True, slots=True)
class Verification:
    payee_id: int
    first_micros: int
    second_micros: int
    attempts: int
    status: str  # pending | verified | locked
