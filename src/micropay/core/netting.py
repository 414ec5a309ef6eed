"""The netted plan: the fast path for batches of plain single transfers.

Most batches are plain single transfers between existing accounts that can
afford them. For those, the store need not read anything: it applies one
guarded counter update per *account* (not per transfer: a hot merchant receiving
half the batch costs one row update) and inserts the transfers. The guards make
the database refuse the update when the plan's assumptions do not hold; the
store then rolls the attempt back and the batch takes the exact path
(:func:`micropay.core.engine.apply_batch`), which gives the same results.

Why the guards are enough: each guard checks an account against the *sum* of
its debits (or credits) in the batch, ignoring credits the batch brings in.
If the sum fits, every prefix fits, so the sequential engine would accept every
transfer too, and the final counters are equal.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from micropay.core.engine import validate_request
from micropay.core.limits import amount_micros_max
from micropay.core.statuses import TransferStatus
from micropay.core.transfers import Transfer, TransferFlags

_LINKED = int(TransferFlags.LINKED)


class _Sum:
    __slots__ = ("credits", "currency", "debits")

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.debits = 0
        self.credits = 0


@dataclass(frozen=True, slots=True)
class AccountGuard:
    """One guarded update: add the sums if the account exists in ``currency`` and can take them."""

    account_id: int
    currency: str
    debits_micros: int
    credits_micros: int


@dataclass(frozen=True, slots=True)
class NettedPlan:
    transfers: Sequence[Transfer]
    created_at_us: int
    guards: list[AccountGuard]


def plan_netted(batch: Sequence[Transfer], now_us: int) -> NettedPlan | None:
    """A netted plan for ``batch``, or ``None`` when it must take the exact path.

    Eligible: every transfer passes its request checks, is a plain single
    transfer (no hold, post or void), ids are unique in the batch, each
    account is used in one currency, and no chain is left open.
    """
    if not batch or batch[-1].flags == _LINKED:
        return None
    sums: dict[int, _Sum] = {}
    ok = TransferStatus.ok
    for t in batch:
        if t.flags not in (0, _LINKED) or validate_request(t) is not ok:
            return None
        debit = sums.get(t.debit_account_id)
        if debit is None:
            debit = sums[t.debit_account_id] = _Sum(t.currency)
        credit = sums.get(t.credit_account_id)
        if credit is None:
            credit = sums[t.credit_account_id] = _Sum(t.currency)
        if debit.currency != t.currency or credit.currency != t.currency:
            return None
        debit.debits += t.amount_micros
        credit.credits += t.amount_micros
    if len({t.id for t in batch}) != len(batch):
        return None
    guards = []
    for account_id in sorted(sums):
        s = sums[account_id]
        if s.debits > amount_micros_max or s.credits > amount_micros_max:
            return None  # the exact path reports the overflow transfer by transfer
        guards.append(AccountGuard(account_id, s.currency, s.debits, s.credits))
    return NettedPlan(batch, now_us, guards)
