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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import NamedTuple

from micropay.core.accounts import Account, AccountFlags
from micropay.core.currencies import CURRENCY_EXPONENTS
from micropay.core.engine import CounterDelta, validate_request
from micropay.core.limits import amount_micros_max, code_max, id_max, system_id_min
from micropay.core.statuses import TransferStatus
from micropay.core.transfers import Transfer, TransferFlags, TransferResult

_LINKED = int(TransferFlags.LINKED)


class _Sum:
    __slots__ = ("credits", "currency", "debits")

    def __init__(self, currency: str) -> None:
        self.currency = currency
        self.debits = 0
        self.credits = 0


class AccountGuard(NamedTuple):
    """One guarded update: add the sums if the account exists in ``currency`` and can take them.

    A named tuple (immutable) rather than a dataclass: a batch makes one per
    account touched, and a store can pass guards straight to its driver as
    statement parameters.
    """

    account_id: int
    currency: str
    debits_micros: int
    credits_micros: int


# AccountGuard(*row) without the Python-level __new__ of a named tuple.
_new_guard = partial(tuple.__new__, AccountGuard)


# The journal row of a planned transfer, in this field order. The fields a
# plain single transfer leaves empty (pending id, timeout, expiry, rejection)
# are not in it: a store writes their constant values itself.
NETTED_ROW_FIELDS = (
    "id",
    "debit_account_id",
    "credit_account_id",
    "amount_micros",
    "currency",
    "code",
    "flags",
    "reference",
    "metadata",
    "created_at_us",
)
NettedRow = tuple[int, int, int, int, str, int, int, str, str, int]


@dataclass(frozen=True, slots=True)
class NettedPlan:
    transfers: Sequence[Transfer]
    created_at_us: int
    guards: list[AccountGuard]
    rows: list[NettedRow]  # one per transfer, in batch order (``NETTED_ROW_FIELDS``)


def plan_netted(batch: Sequence[Transfer], now_us: int) -> NettedPlan | None:
    """A netted plan for ``batch``, or ``None`` when it must take the exact path.

    Eligible: every transfer passes its request checks, is a plain single
    transfer (no hold, post or void), ids are unique in the batch, each
    account is used in one currency, and no chain is left open.
    """
    if not batch or batch[-1].flags == _LINKED:
        return None
    plan = _plan_common(batch, now_us)
    if plan is _UNCOMMON:
        return _plan_any(batch, now_us)
    return plan  # type: ignore[return-value]


_UNCOMMON = object()
_ID_MAX = id_max
_CODE_MAX = code_max
_transfer_id = attrgetter("id")


def _plan_common(batch: Sequence[Transfer], now_us: int) -> NettedPlan | object | None:
    """The same plan as :func:`_plan_any` for the common batch, about three times faster.

    Common: one currency, and every transfer a plain single transfer with
    exact ``int`` fields, no pending id or timeout, and empty reference and
    metadata. Such a transfer passes :func:`validate_request` exactly when
    the range checks below hold. Anything else returns ``_UNCOMMON`` and
    takes the general path, which decides it the same way as before.
    """
    currency = batch[0].currency
    if type(currency) is not str or currency not in CURRENCY_EXPONENTS:
        return _UNCOMMON
    debits: dict[int, int] = {}
    credit_sums: dict[int, int] = {}
    debits_get, credits_get = debits.get, credit_sums.get
    rows: list[NettedRow] = []
    add_row = rows.append
    id_max_, amount_max, code_max_ = _ID_MAX, amount_micros_max, _CODE_MAX
    client_id_end = system_id_min  # ids from here up are the system's
    for t in batch:
        transfer_id = t.id
        debit = t.debit_account_id
        credit = t.credit_account_id
        amount = t.amount_micros
        flags = t.flags
        code = t.code
        pending_id = t.pending_id
        timeout = t.timeout_s
        reference = t.reference
        metadata = t.metadata
        transfer_currency = t.currency
        if not (
            type(transfer_id) is int
            and type(debit) is int
            and type(credit) is int
            and type(amount) is int
            and type(flags) is int
            and type(code) is int
            and type(pending_id) is int
            and type(timeout) is int
            and type(reference) is str
            and type(metadata) is str
            and 0 < transfer_id < client_id_end
            and 0 < debit <= id_max_
            and 0 < credit <= id_max_
            and debit != credit
            and 0 < amount <= amount_max
            and flags in (0, _LINKED)
            and pending_id == 0
            and timeout == 0
            and 0 <= code <= code_max_
            and not reference
            and not metadata
            and (
                transfer_currency is currency
                or (type(transfer_currency) is str and transfer_currency == currency)
            )
        ):
            return _UNCOMMON
        debits[debit] = debits_get(debit, 0) + amount
        credit_sums[credit] = credits_get(credit, 0) + amount
        add_row((transfer_id, debit, credit, amount, currency, code, flags, "", "", now_us))
    if len(set(map(_transfer_id, batch))) != len(batch):
        return None
    account_ids = sorted(debits.keys() | credit_sums.keys())
    count = len(account_ids)
    debit_totals = list(map(debits_get, account_ids, repeat(0, count)))
    credit_totals = list(map(credits_get, account_ids, repeat(0, count)))
    # Debits and credits both sum to the batch total: if it fits, every account's does.
    if sum(debit_totals) > amount_max and (
        max(debit_totals) > amount_max or max(credit_totals) > amount_max
    ):
        return None  # the exact path reports the overflow transfer by transfer
    sums = zip(account_ids, repeat(currency, count), debit_totals, credit_totals, strict=True)
    guards: list[AccountGuard] = list(map(_new_guard, sums))
    return NettedPlan(batch, now_us, guards, rows)


def _plan_any(batch: Sequence[Transfer], now_us: int) -> NettedPlan | None:
    """The general eligibility check, transfer by transfer (any field values)."""
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
    rows: list[NettedRow] = [
        (
            t.id,
            t.debit_account_id,
            t.credit_account_id,
            t.amount_micros,
            t.currency,
            int(t.code),
            int(t.flags),
            t.reference,
            t.metadata,
            now_us,
        )
        for t in batch
    ]
    return NettedPlan(batch, now_us, guards, rows)


# TransferResult(*fields) without the Python-level __new__ of a named tuple.
_new_result = partial(tuple.__new__, TransferResult)
_row_id = itemgetter(0)


def netted_results(plan: NettedPlan) -> list[TransferResult]:
    """The results of an applied netted plan: every transfer ``ok``, none replayed, in order.

    Equal to ``[TransferResult(t.id, TransferStatus.ok) for t in plan.transfers]``.
    """
    count = len(plan.rows)
    fields = zip(
        map(_row_id, plan.rows), repeat(TransferStatus.ok, count), repeat(False, count), strict=True
    )
    return list(map(_new_result, fields))


# --- the plain exact path ------------------------------------------------------
#
# A netted plan whose guards refuse (a wallet cannot afford its debits) need
# not go through the general engine: its transfers are still plain singles,
# so their outcome follows from the accounts' counters alone. ``settle_plain``
# computes it against the locked accounts, with the engine's checks in the
# engine's order (a differential test holds it to ``apply_batch``). Ids are
# taken to be new: a store writing the outcome must refuse it when one is
# already recorded, and the batch then takes the general path, which replays.

_DMNEC = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CMNED = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)

PlainRejectionRow = tuple[int, int, int, int, str, int, int, str, str, int, str]


@dataclass(frozen=True, slots=True)
class PlainOutcome:
    """What the engine would do with a netted plan's batch, given its accounts."""

    results: list[TransferResult]
    accepted: list[NettedRow]  # rows of the transfers applied, in batch order
    rejected: list[PlainRejectionRow]  # the same fields, then the remembered status
    deltas: dict[int, CounterDelta]  # posted counters only; plain transfers hold nothing


# What the plain path reads of an account, in this order (``ACCOUNT_STATE_FIELDS``).
ACCOUNT_STATE_FIELDS = (
    "currency",
    "flags",
    "credit_limit_micros",
    "debits_pending_micros",
    "debits_posted_micros",
    "credits_pending_micros",
    "credits_posted_micros",
)
AccountState = tuple[str, int, int, int, int, int, int]


def account_state(account: Account) -> AccountState:
    return (
        account.currency,
        account.flags,
        account.credit_limit_micros,
        account.debits_pending_micros,
        account.debits_posted_micros,
        account.credits_pending_micros,
        account.credits_posted_micros,
    )


def settle_plain(plan: NettedPlan, accounts: Mapping[int, AccountState]) -> PlainOutcome | None:
    """The outcome of ``plan``'s batch against ``accounts``, or ``None`` if it has a chain.

    ``accounts`` are the plan's accounts as locked for the write (missing ones
    are absent). Linked chains need the engine's undo: they return ``None``.
    """
    rows = plan.rows
    if any(row[6] & _LINKED for row in rows):
        return None
    ok = TransferStatus.ok
    # What the batch has posted so far, per account (plain transfers hold
    # nothing): ints, so that the loop allocates no tracked objects.
    debited: dict[int, int] = {}
    credited: dict[int, int] = {}
    debited_get, credited_get = debited.get, credited.get
    results: list[TransferResult] = []
    accepted: list[NettedRow] = []
    rejected: list[PlainRejectionRow] = []
    add_result, add_accepted, add_rejected = results.append, accepted.append, rejected.append
    get = accounts.get
    amount_max = amount_micros_max
    for row in rows:
        transfer_id, debit_id, credit_id, amount, currency = row[0], row[1], row[2], row[3], row[4]
        debit = get(debit_id)
        credit = get(credit_id)
        if debit is None:
            status, value = _DEBIT_NOT_FOUND
        elif credit is None:
            status, value = _CREDIT_NOT_FOUND
        elif debit[0] != credit[0]:
            status, value = _CURRENCIES_DIFFER
        elif currency != debit[0]:
            status, value = _TRANSFER_CURRENCY_DIFFERS
        else:
            room = amount_max - amount
            d_posted = debit[4] + debited_get(debit_id, 0)
            c_posted = credit[6] + credited_get(credit_id, 0)
            if d_posted > room:
                status, value = _OVERFLOWS_DEBITS_POSTED
            elif c_posted > room:
                status, value = _OVERFLOWS_CREDITS_POSTED
            elif debit[3] + d_posted > room:
                status, value = _OVERFLOWS_DEBITS
            elif credit[5] + c_posted > room:
                status, value = _OVERFLOWS_CREDITS
            elif (
                debit[1] & _DMNEC
                and debit[3] + d_posted - debit[6] - credited_get(debit_id, 0) > debit[2] - amount
            ):
                status, value = _EXCEEDS_CREDITS
            elif (
                credit[1] & _CMNED
                and credit[5] + c_posted - credit[4] - debited_get(credit_id, 0)
                > credit[2] - amount
            ):
                status, value = _EXCEEDS_DEBITS
            else:
                debited[debit_id] = d_posted - debit[4] + amount
                credited[credit_id] = c_posted - credit[6] + amount
                add_accepted(row)
                add_result(_new_result((transfer_id, ok, False)))
                continue
        # Every status above is a state check: remembered against the id.
        add_rejected((*row, value))
        add_result(_new_result((transfer_id, status, False)))
    deltas = {
        account_id: CounterDelta(0, debited_get(account_id, 0), 0, credited_get(account_id, 0))
        for account_id in debited.keys() | credited.keys()
    }
    return PlainOutcome(results, accepted, rejected, deltas)


def _with_value(status: TransferStatus) -> tuple[TransferStatus, str]:
    return status, status.value


_DEBIT_NOT_FOUND = _with_value(TransferStatus.debit_account_not_found)
_CREDIT_NOT_FOUND = _with_value(TransferStatus.credit_account_not_found)
_CURRENCIES_DIFFER = _with_value(TransferStatus.accounts_must_have_the_same_currency)
_TRANSFER_CURRENCY_DIFFERS = _with_value(
    TransferStatus.transfer_must_have_the_same_currency_as_accounts
)
_OVERFLOWS_DEBITS_POSTED = _with_value(TransferStatus.overflows_debits_posted)
_OVERFLOWS_CREDITS_POSTED = _with_value(TransferStatus.overflows_credits_posted)
_OVERFLOWS_DEBITS = _with_value(TransferStatus.overflows_debits)
_OVERFLOWS_CREDITS = _with_value(TransferStatus.overflows_credits)
_EXCEEDS_CREDITS = _with_value(TransferStatus.exceeds_credits)
_EXCEEDS_DEBITS = _with_value(TransferStatus.exceeds_debits)
