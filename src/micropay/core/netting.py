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


class NettedPlan:
    """A batch of plain single transfers, its journal rows, and its sums per account.

    The sums and guards (one per account, in id order) are built when first
    asked for: the netted path needs them, the plain path only the account ids.
    """

    __slots__ = (
        "_credits",
        "_currency",
        "_debits",
        "_guards",
        "created_at_us",
        "rows",
        "transfers",
    )

    def __init__(
        self,
        transfers: Sequence[Transfer],
        created_at_us: int,
        rows: list[NettedRow],
        currency: str | Mapping[int, str],
        debits: dict[int, int] | None = None,
        credit_sums: dict[int, int] | None = None,
    ) -> None:
        self.transfers = transfers
        self.created_at_us = created_at_us
        self.rows = rows  # one per transfer, in batch order (``NETTED_ROW_FIELDS``)
        self._currency = currency  # the batch's one currency, or each account's
        # Account id -> the batch's debits (credits) of it; from ``rows`` if not given.
        self._debits = debits
        self._credits = credit_sums
        self._guards: list[AccountGuard] | None = None

    @property
    def account_ids(self) -> set[int]:
        """Every account the batch debits or credits."""
        if self._debits is None or self._credits is None:
            return set(map(_row_debit, self.rows)).union(map(_row_credit, self.rows))
        return self._debits.keys() | self._credits.keys()

    def sums(self) -> tuple[dict[int, int], dict[int, int]]:
        """Per account, the batch's debits and credits (accounts it does not touch absent)."""
        if self._debits is None or self._credits is None:
            self._debits, self._credits = _sums(self.rows)
        return self._debits, self._credits

    def guard_rows(self) -> list[tuple[int, str, int, int]]:
        """The guards' fields as plain tuples, in no particular order (cheaper to build)."""
        debits, credit_sums = self.sums()
        currency = self._currency
        account_ids = debits.keys() | credit_sums.keys()
        count = len(account_ids)
        currencies = (
            repeat(currency, count)
            if isinstance(currency, str)
            else map(currency.__getitem__, account_ids)
        )
        return list(
            zip(
                account_ids,
                currencies,
                map(debits.get, account_ids, repeat(0, count)),
                map(credit_sums.get, account_ids, repeat(0, count)),
                strict=True,
            )
        )

    @property
    def guards(self) -> list[AccountGuard]:
        """One guard per account, in account id order (the order to lock them in)."""
        if self._guards is None:
            debits, credit_sums = self.sums()
            currency = self._currency
            account_ids = sorted(debits.keys() | credit_sums.keys())
            count = len(account_ids)
            currencies = (
                repeat(currency, count)
                if isinstance(currency, str)
                else map(currency.__getitem__, account_ids)
            )
            sums = zip(
                account_ids,
                currencies,
                map(debits.get, account_ids, repeat(0, count)),
                map(credit_sums.get, account_ids, repeat(0, count)),
                strict=True,
            )
            self._guards = list(map(_new_guard, sums))
        return self._guards

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, NettedPlan):
            return NotImplemented
        return (self.transfers, self.created_at_us, self.rows, self.guards) == (
            other.transfers,
            other.created_at_us,
            other.rows,
            other.guards,
        )

    __hash__ = None  # type: ignore[assignment]  # mutable cache inside: not hashable


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
_ZERO, _ONE, _EMPTY = 0, _LINKED, ""
_ID_MAX = id_max
_CODE_MAX = code_max
_transfer_id = attrgetter("id")
_row_debit, _row_credit, _row_amount, _row_flags = (itemgetter(i) for i in (1, 2, 3, 6))


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
    rows: list[NettedRow] = []
    add_row = rows.append
    id_max_, amount_max, code_max_ = _ID_MAX, amount_micros_max, _CODE_MAX
    client_id_end = system_id_min  # ids from here up are the system's
    # Identity tests where they are exact: ``x is zero`` holds only for the
    # int 0 itself (never False, 0.0 or an int subclass), ``x is empty`` only
    # for the str "". A value that fails them only costs the general path.
    zero, one, empty = _ZERO, _ONE, _EMPTY
    for t in batch:
        transfer_id = t.id
        debit = t.debit_account_id
        credit = t.credit_account_id
        amount = t.amount_micros
        flags = t.flags
        code = t.code
        transfer_currency = t.currency
        if not (
            type(transfer_id) is int
            and type(debit) is int
            and type(credit) is int
            and type(amount) is int
            and type(code) is int
            and (flags is zero or flags is one)
            and t.pending_id is zero
            and t.timeout_s is zero
            and t.reference is empty
            and t.metadata is empty
            and 0 < transfer_id < client_id_end
            and 0 < debit <= id_max_
            and 0 < credit <= id_max_
            and debit != credit
            and 0 < amount <= amount_max
            and 0 <= code <= code_max_
            and (
                transfer_currency is currency
                or (type(transfer_currency) is str and transfer_currency == currency)
            )
        ):
            return _UNCOMMON
        add_row((transfer_id, debit, credit, amount, currency, code, flags, "", "", now_us))
    if len(set(map(_transfer_id, batch))) != len(batch):
        return None
    # Debits and credits both sum to the batch total: if it fits, every account's does.
    if sum(map(_row_amount, rows)) > amount_max:
        debits, credit_sums = _sums(rows)
        if max(debits.values()) > amount_max or max(credit_sums.values()) > amount_max:
            return None  # the exact path reports the overflow transfer by transfer
        return NettedPlan(batch, now_us, rows, currency, debits, credit_sums)
    return NettedPlan(batch, now_us, rows, currency)


def _sums(rows: Sequence[NettedRow]) -> tuple[dict[int, int], dict[int, int]]:
    debits: dict[int, int] = {}
    credit_sums: dict[int, int] = {}
    debits_get, credits_get = debits.get, credit_sums.get
    for _, debit, credit, amount, _, _, _, _, _, _ in rows:
        debits[debit] = debits_get(debit, 0) + amount
        credit_sums[credit] = credits_get(credit, 0) + amount
    return debits, credit_sums


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
    for s in sums.values():
        if s.debits > amount_micros_max or s.credits > amount_micros_max:
            return None  # the exact path reports the overflow transfer by transfer
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
    debits = {account_id: s.debits for account_id, s in sums.items() if s.debits}
    credit_sums = {account_id: s.credits for account_id, s in sums.items() if s.credits}
    currencies = {account_id: s.currency for account_id, s in sums.items()}
    return NettedPlan(batch, now_us, rows, currencies, debits, credit_sums)


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


PostedDelta = tuple[int, int, int]  # (debits posted, credits posted, account id)


@dataclass(frozen=True, slots=True)
class PlainOutcome:
    """What the engine would do with a netted plan's batch, given its accounts."""

    results: list[TransferResult]
    accepted: list[NettedRow]  # rows of the transfers applied, in batch order
    rejected_rows: list[NettedRow]  # rows of the transfers refused, in batch order
    rejected_statuses: list[str]  # the status each is remembered with (its value)
    # Per account with an accepted transfer: plain transfers change posted
    # counters only, so this is the whole counter change (and SQL parameters).
    posted: list[PostedDelta]

    @property
    def rejected(self) -> list[PlainRejectionRow]:
        """The refused transfers' rows, each followed by its status."""
        return [
            (*row, status)
            for row, status in zip(self.rejected_rows, self.rejected_statuses, strict=True)
        ]

    @property
    def deltas(self) -> dict[int, CounterDelta]:
        """``posted`` as the engine's counter deltas."""
        return {
            account_id: CounterDelta(0, debits_posted, 0, credits_posted)
            for debits_posted, credits_posted, account_id in self.posted
        }


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
    are absent; others may be present). Linked chains need the engine's undo:
    they return ``None``.
    """
    rows = plan.rows
    if any(map(_LINKED.__and__, map(_row_flags, rows))):
        return None
    ok = TransferStatus.ok
    # What the batch has posted so far, per account (plain transfers hold
    # nothing): ints, so that the loop allocates no tracked objects.
    debited: dict[int, int] = {}
    credited: dict[int, int] = {}
    debited_get, credited_get = debited.get, credited.get
    statuses: list[TransferStatus] = []
    accepted: list[NettedRow] = []
    rejected: list[NettedRow] = []
    values: list[str] = []
    add_status, add_accepted, add_rejected = statuses.append, accepted.append, rejected.append
    add_value = values.append
    get = accounts.get
    amount_max = amount_micros_max
    for row in rows:
        _, debit_id, credit_id, amount, currency, _, _, _, _, _ = row
        debit = get(debit_id)
        credit = get(credit_id)
        if debit is None:
            status, value = _DEBIT_NOT_FOUND
        elif credit is None:
            status, value = _CREDIT_NOT_FOUND
        else:
            # Counters as stored, then (for the two checked) plus this batch's.
            d_currency, d_flags, d_limit, d_pending, d_posted, _, d_credits = debit
            c_currency, c_flags, c_limit, _, c_debits, c_pending, c_posted = credit
            if d_currency != c_currency:
                status, value = _CURRENCIES_DIFFER
            elif currency != d_currency:
                status, value = _TRANSFER_CURRENCY_DIFFERS
            else:
                room = amount_max - amount
                batch_debits = debited_get(debit_id, 0)
                batch_credits = credited_get(credit_id, 0)
                d_posted += batch_debits
                c_posted += batch_credits
                if d_posted > room:
                    status, value = _OVERFLOWS_DEBITS_POSTED
                elif c_posted > room:
                    status, value = _OVERFLOWS_CREDITS_POSTED
                elif d_pending + d_posted > room:
                    status, value = _OVERFLOWS_DEBITS
                elif c_pending + c_posted > room:
                    status, value = _OVERFLOWS_CREDITS
                elif (
                    d_flags & _DMNEC
                    and d_pending + d_posted - d_credits - credited_get(debit_id, 0)
                    > d_limit - amount
                ):
                    status, value = _EXCEEDS_CREDITS
                elif (
                    c_flags & _CMNED
                    and c_pending + c_posted - c_debits - debited_get(credit_id, 0)
                    > c_limit - amount
                ):
                    status, value = _EXCEEDS_DEBITS
                else:
                    debited[debit_id] = batch_debits + amount
                    credited[credit_id] = batch_credits + amount
                    add_accepted(row)
                    add_status(ok)
                    continue
        # Every status above is a state check: remembered against the id.
        add_rejected(row)
        add_value(value)
        add_status(status)
    count = len(rows)
    results = list(
        map(_new_result, zip(map(_row_id, rows), statuses, repeat(False, count), strict=True))
    )
    touched = debited.keys() | credited.keys()
    count = len(touched)
    posted = list(
        zip(
            map(debited_get, touched, repeat(0, count)),
            map(credited_get, touched, repeat(0, count)),
            touched,
            strict=True,
        )
    )
    return PlainOutcome(results, accepted, rejected, values, posted)


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
