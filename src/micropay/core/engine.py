"""The exact ledger engine: apply a batch of transfers to a view of the ledger.

Pure: no I/O, no clock. The store loads a :class:`LedgerView` (the accounts,
transfers, remembered failures and hold resolutions the batch refers to); the
engine returns a :class:`BatchPlan` (results, new rows, net counter changes)
that the store persists in the same database transaction.

Transfers apply in order, each seeing the effects of those before it. Checks
run in the order of precedence of :class:`TransferStatus`. A linked chain
applies all or nothing: when one member fails, the others get
``linked_event_failed`` and the chain's effects are undone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

from micropay.core import limits
from micropay.core.accounts import Account, AccountFlags, is_storable_text
from micropay.core.currencies import CURRENCY_EXPONENTS
from micropay.core.statuses import TransferStatus as S
from micropay.core.transfers import (
    KIND_FLAGS,
    RESOLVING_FLAGS,
    TRANSFER_FLAGS_KNOWN,
    Rejection,
    StoredTransfer,
    Transfer,
    TransferFlags,
    TransferResult,
)

_LINKED = int(TransferFlags.LINKED)
_PENDING = int(TransferFlags.PENDING)
_POST = int(TransferFlags.POST_PENDING)
_VOID = int(TransferFlags.VOID_PENDING)
_EXPIRE = int(TransferFlags.EXPIRE_PENDING)
_DMNEC = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
_CMNED = int(AccountFlags.CREDITS_MUST_NOT_EXCEED_DEBITS)
_MAX = limits.amount_micros_max
_US_PER_S = 1_000_000


@dataclass(frozen=True, slots=True)
class LedgerView:
    """What the engine may read. Missing keys mean "does not exist"."""

    accounts: Mapping[int, Account]
    transfers: Mapping[int, StoredTransfer]
    rejections: Mapping[int, Rejection]
    # pending_id -> flags of the transfer that resolved it (post/void/expire)
    resolutions: Mapping[int, int]


@dataclass(frozen=True, slots=True)
class CounterDelta:
    """Net change of one account's counters over a batch."""

    debits_pending_micros: int
    debits_posted_micros: int
    credits_pending_micros: int
    credits_posted_micros: int


@dataclass(slots=True)
class BatchPlan:
    results: list[TransferResult]
    transfers: list[StoredTransfer] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)
    deltas: dict[int, CounterDelta] = field(default_factory=dict)


def validate_request(t: Transfer, *, system: bool = False) -> S:
    """Request checks of one transfer (no state), in order of precedence.

    Chain checks (``linked_event_*``) are the batch's and are not made here.
    Ids from ``system_id_min`` up and the ``EXPIRE_PENDING`` flag belong to the
    expiry job (``system=True``): a client could otherwise pre-empt a hold's
    expiry transfer and keep the money held for ever.
    """
    if type(t.id) is not int or t.id < limits.id_min:
        return S.id_must_be_positive
    if t.id > limits.id_max:
        return S.id_must_not_exceed_max
    if t.id >= limits.system_id_min and not system:
        return S.id_reserved_for_system
    flags = t.flags
    if type(flags) is not int and (isinstance(flags, bool) or not isinstance(flags, int)):
        return S.flags_are_unknown  # an IntFlag is fine, a bool or str is not
    if flags < 0 or flags & ~TRANSFER_FLAGS_KNOWN:
        return S.flags_are_unknown
    kind = flags & KIND_FLAGS
    if kind & (kind - 1):
        return S.flags_are_mutually_exclusive
    if kind & _EXPIRE and not system:
        return S.expire_reserved_for_system
    resolving = kind & RESOLVING_FLAGS
    debit, credit = t.debit_account_id, t.credit_account_id
    if (
        type(debit) is not int
        or debit < 0
        or debit > limits.id_max
        or (not resolving and not debit)
    ):
        return S.debit_account_id_must_be_positive
    if (
        type(credit) is not int
        or credit < 0
        or credit > limits.id_max
        or (not resolving and not credit)
    ):
        return S.credit_account_id_must_be_positive
    if debit and debit == credit:
        return S.accounts_must_be_different
    pending_id = t.pending_id
    if type(pending_id) is not int:
        return S.pending_id_must_be_positive
    if not resolving and pending_id:
        return S.pending_id_must_be_zero
    if resolving and not limits.id_min <= pending_id <= limits.id_max:
        return S.pending_id_must_be_positive
    if resolving and pending_id == t.id:
        return S.pending_id_must_be_different
    timeout = t.timeout_s
    if type(timeout) is not int:
        return S.timeout_must_be_in_range
    if timeout and not kind & _PENDING:
        return S.timeout_reserved_for_pending_transfer
    if not 0 <= timeout <= limits.timeout_s_max:
        return S.timeout_must_be_in_range
    amount = t.amount_micros
    if type(amount) is not int:
        return S.amount_must_be_an_int
    if amount < 0 or (amount == 0 and not resolving):
        return S.amount_must_be_positive
    if amount > _MAX:
        return S.amount_exceeds_max
    currency = t.currency
    if not isinstance(currency, str) or (
        currency not in CURRENCY_EXPONENTS and (currency or not resolving)
    ):
        return S.currency_must_be_valid
    code = t.code
    if type(code) is not int and (isinstance(code, bool) or not isinstance(code, int)):
        return S.code_must_be_in_range  # an IntEnum is fine, a bool or str is not
    if not 0 <= code <= limits.code_max:
        return S.code_must_be_in_range
    reference, metadata = t.reference, t.metadata
    if not (reference == "" and metadata == "") and not (
        is_storable_text(reference) and is_storable_text(metadata)
    ):
        return S.text_must_be_valid
    if len(reference) > limits.reference_chars_max:
        return S.reference_too_long
    if metadata and len(metadata.encode("utf-8")) > limits.metadata_bytes_max:
        return S.metadata_too_large
    return S.ok


def chain_ranges(batch: Sequence[Transfer]) -> list[tuple[int, int]]:
    """Split a batch into ``[start, end)`` ranges of linked chains (singles are chains of one)."""
    ranges: list[tuple[int, int]] = []
    start = 0
    for index, t in enumerate(batch):
        if not (isinstance(t.flags, int) and t.flags & _LINKED):
            ranges.append((start, index + 1))
            start = index + 1
    if start < len(batch):
        ranges.append((start, len(batch)))  # open chain at the end of the batch
    return ranges


class _Counters:
    __slots__ = ("account", "cp", "cpo", "dp", "dpo")

    def __init__(self, account: Account) -> None:
        self.account = account
        self.dp = account.debits_pending_micros
        self.dpo = account.debits_posted_micros
        self.cp = account.credits_pending_micros
        self.cpo = account.credits_posted_micros

    def snapshot(self) -> tuple[int, int, int, int]:
        return (self.dp, self.dpo, self.cp, self.cpo)

    def restore(self, values: tuple[int, int, int, int]) -> None:
        self.dp, self.dpo, self.cp, self.cpo = values


class _Work:
    """Mutable working state of one batch, overlaying the immutable view."""

    def __init__(self, view: LedgerView, now_us: int) -> None:
        self.view = view
        self.now_us = now_us
        self.counters: dict[int, _Counters] = {}
        self.created: dict[int, StoredTransfer] = {}
        self.rejected: dict[int, Rejection] = {}
        self.resolved: dict[int, int] = {}

    def account(self, account_id: int) -> _Counters | None:
        counters = self.counters.get(account_id)
        if counters is None:
            account = self.view.accounts.get(account_id)
            if account is None:
                return None
            counters = self.counters[account_id] = _Counters(account)
        return counters

    def transfer(self, transfer_id: int) -> StoredTransfer | None:
        found = self.created.get(transfer_id)
        return found if found is not None else self.view.transfers.get(transfer_id)

    def rejection(self, transfer_id: int) -> Rejection | None:
        found = self.rejected.get(transfer_id)
        return found if found is not None else self.view.rejections.get(transfer_id)

    def resolution(self, pending_id: int) -> int | None:
        found = self.resolved.get(pending_id)
        return found if found is not None else self.view.resolutions.get(pending_id)


def apply_batch(
    batch: Sequence[Transfer], view: LedgerView, now_us: int, *, system: bool = False
) -> BatchPlan:
    """Apply ``batch`` in order against ``view`` at time ``now_us``; return the plan to persist.

    ``system`` admits the expiry job's reserved ids and flag (see ``validate_request``).
    """
    if len(batch) > limits.batch_transfers_max:
        raise ValueError(f"a batch holds at most {limits.batch_transfers_max} transfers")
    work = _Work(view, now_us)
    results: list[TransferResult | None] = [None] * len(batch)
    for start, end in chain_ranges(batch):
        if end - start == 1 and not _is_linked(batch[start].flags):
            results[start] = _apply_single(batch[start], work, system)
        else:
            _apply_chain(batch, start, end, work, results, system)
    plan = BatchPlan(results=[r for r in results if r is not None])
    if len(plan.results) != len(batch):
        raise RuntimeError("engine left a transfer without a result")
    plan.transfers = list(work.created.values())
    plan.rejections = list(work.rejected.values())
    for account_id, counters in work.counters.items():
        a = counters.account
        delta = CounterDelta(
            counters.dp - a.debits_pending_micros,
            counters.dpo - a.debits_posted_micros,
            counters.cp - a.credits_pending_micros,
            counters.cpo - a.credits_posted_micros,
        )
        if delta != _ZERO_DELTA:
            plan.deltas[account_id] = delta
    return plan


_ZERO_DELTA = CounterDelta(0, 0, 0, 0)


def _apply_chain(
    batch: Sequence[Transfer],
    start: int,
    end: int,
    work: _Work,
    results: list[TransferResult | None],
    system: bool,
) -> None:
    chain = batch[start:end]
    open_chain = bool(isinstance(chain[-1].flags, int) and chain[-1].flags & _LINKED)
    # 1. request checks over the whole chain: nothing is remembered on failure.
    request_statuses = [validate_request(t, system=system) for t in chain]
    if open_chain:
        request_statuses[-1] = S.linked_event_chain_open
    failed_at = next((i for i, s in enumerate(request_statuses) if s is not S.ok), None)
    if failed_at is not None:
        for offset, t in enumerate(chain):
            status = request_statuses[offset] if offset == failed_at else S.linked_event_failed
            results[start + offset] = TransferResult(_safe_id(t), status)
        return
    # 2. idempotency, then 3. state checks, transfer by transfer.
    undo: list[tuple[_Counters, tuple[int, int, int, int]]] = []
    new_ids: list[int] = []
    resolved_ids: list[int] = []
    chain_results: list[TransferResult] = []
    failure: S | None = None
    for t in chain:
        replay = _replay(t, work)
        if replay is not None:
            chain_results.append(replay)
            if replay.status is not S.ok:  # a conflict, or a replayed failure
                failure = replay.status
                break
            continue
        status = _execute(t, work, undo, resolved_ids)
        if status is not S.ok:
            chain_results.append(TransferResult(t.id, status))
            failure = status
            break
        new_ids.append(t.id)
        chain_results.append(TransferResult(t.id, S.ok))
    if failure is None:
        for offset, result in enumerate(chain_results):
            results[start + offset] = result
        return
    # Undo the chain's effects, then report (and remember) the failure.
    for counters, values in reversed(undo):
        counters.restore(values)
    for transfer_id in new_ids:
        del work.created[transfer_id]
    for pending_id in resolved_ids:
        del work.resolved[pending_id]
    failed_index = len(chain_results) - 1
    undone = set(new_ids)
    replayed_failure = chain_results[-1].replayed
    for offset, t in enumerate(chain):
        if (offset != failed_index or replayed_failure) and t.id not in undone:
            # A member that was already recorded keeps its first result.
            earlier = _replay(t, work)
            if earlier is not None:
                results[start + offset] = earlier
                continue
        status = failure if offset == failed_index else S.linked_event_failed
        results[start + offset] = TransferResult(t.id, status)
        if failure.is_remembered:
            work.rejected[t.id] = Rejection(t, status, work.now_us)


def _is_linked(flags: object) -> bool:
    return isinstance(flags, int) and bool(flags & _LINKED)


def _apply_single(t: Transfer, work: _Work, system: bool) -> TransferResult:
    """A transfer outside any chain: the chain machinery is not needed.

    ``_execute`` makes every check before it changes anything, so a failure
    has nothing to undo.
    """
    status = validate_request(t, system=system)
    if status is not S.ok:
        return TransferResult(_safe_id(t), status)
    replay = _replay(t, work)
    if replay is not None:
        return replay
    status = _execute(t, work, _NO_UNDO, [])
    if status is not S.ok and status.is_remembered:
        work.rejected[t.id] = Rejection(t, status, work.now_us)
    return TransferResult(t.id, status)


class _DiscardUndo(list[tuple["_Counters", tuple[int, int, int, int]]]):
    """An undo log that keeps nothing: a single transfer never needs undoing."""

    def append(self, item: tuple[_Counters, tuple[int, int, int, int]]) -> None:
        pass


_NO_UNDO = _DiscardUndo()


def _safe_id(t: Transfer) -> int:
    return t.id if type(t.id) is int else 0


def _replay(t: Transfer, work: _Work) -> TransferResult | None:
    existing = work.transfer(t.id)
    if existing is not None:
        if existing.matches(t):
            return TransferResult(t.id, S.ok, replayed=True)
        return TransferResult(t.id, S.id_already_used_with_different_request)
    rejection = work.rejection(t.id)
    if rejection is not None:
        if rejection.request == t:
            return TransferResult(t.id, rejection.status, replayed=True)
        return TransferResult(t.id, S.id_already_used_with_different_request)
    return None


def _execute(
    t: Transfer,
    work: _Work,
    undo: list[tuple[_Counters, tuple[int, int, int, int]]],
    resolved_ids: list[int],
) -> S:
    """State checks and effects of one new transfer. Returns its status."""
    if t.flags & RESOLVING_FLAGS:
        return _execute_resolving(t, work, undo, resolved_ids)
    debit = work.account(t.debit_account_id)
    if debit is None:
        return S.debit_account_not_found
    credit = work.account(t.credit_account_id)
    if credit is None:
        return S.credit_account_not_found
    if debit.account.currency != credit.account.currency:
        return S.accounts_must_have_the_same_currency
    if t.currency != debit.account.currency:
        return S.transfer_must_have_the_same_currency_as_accounts
    amount = t.amount_micros
    pending = bool(t.flags & _PENDING)
    expires_at_us = 0
    if pending:
        if debit.dp > _MAX - amount:
            return S.overflows_debits_pending
        if credit.cp > _MAX - amount:
            return S.overflows_credits_pending
    else:
        if debit.dpo > _MAX - amount:
            return S.overflows_debits_posted
        if credit.cpo > _MAX - amount:
            return S.overflows_credits_posted
    if debit.dp + debit.dpo > _MAX - amount:
        return S.overflows_debits
    if credit.cp + credit.cpo > _MAX - amount:
        return S.overflows_credits
    if pending and t.timeout_s:
        if work.now_us > _MAX - t.timeout_s * _US_PER_S:
            return S.overflows_timeout
        expires_at_us = work.now_us + t.timeout_s * _US_PER_S
    d_acc, c_acc = debit.account, credit.account
    if (
        d_acc.flags & _DMNEC
        and debit.dp + debit.dpo - debit.cpo > d_acc.credit_limit_micros - amount
    ):
        return S.exceeds_credits
    if (
        c_acc.flags & _CMNED
        and credit.cp + credit.cpo - credit.dpo > c_acc.credit_limit_micros - amount
    ):
        return S.exceeds_debits
    undo.append((debit, debit.snapshot()))
    undo.append((credit, credit.snapshot()))
    if pending:
        debit.dp += amount
        credit.cp += amount
    else:
        debit.dpo += amount
        credit.cpo += amount
    work.created[t.id] = StoredTransfer(
        id=t.id,
        debit_account_id=t.debit_account_id,
        credit_account_id=t.credit_account_id,
        amount_micros=amount,
        currency=t.currency,
        code=t.code,
        flags=t.flags,
        pending_id=0,
        timeout_s=t.timeout_s,
        reference=t.reference,
        metadata=t.metadata,
        created_at_us=work.now_us,
        expires_at_us=expires_at_us,
    )
    return S.ok


def _execute_resolving(
    t: Transfer,
    work: _Work,
    undo: list[tuple[_Counters, tuple[int, int, int, int]]],
    resolved_ids: list[int],
) -> S:
    hold = work.transfer(t.pending_id)
    if hold is None:
        return S.pending_transfer_not_found
    if not hold.flags & _PENDING:
        return S.pending_transfer_not_pending
    if t.debit_account_id and t.debit_account_id != hold.debit_account_id:
        return S.pending_transfer_has_different_debit_account_id
    if t.credit_account_id and t.credit_account_id != hold.credit_account_id:
        return S.pending_transfer_has_different_credit_account_id
    if t.currency and t.currency != hold.currency:
        return S.pending_transfer_has_different_currency
    kind = t.flags & RESOLVING_FLAGS
    amount = t.amount_micros
    if kind == _POST:
        if amount > hold.amount_micros:
            return S.exceeds_pending_transfer_amount
        amount = amount or hold.amount_micros
    elif amount and amount != hold.amount_micros:
        return S.pending_transfer_has_different_amount
    resolution = work.resolution(hold.id)
    if resolution is not None:
        if resolution & _POST:
            return S.pending_transfer_already_posted
        if resolution & _VOID:
            return S.pending_transfer_already_voided
        return S.pending_transfer_expired
    expired = bool(hold.expires_at_us) and work.now_us >= hold.expires_at_us
    if kind == _EXPIRE:
        if not expired:
            return S.pending_transfer_not_expired
    elif expired:
        return S.pending_transfer_expired
    debit = work.account(hold.debit_account_id)
    if debit is None:
        return S.debit_account_not_found
    credit = work.account(hold.credit_account_id)
    if credit is None:
        return S.credit_account_not_found
    undo.append((debit, debit.snapshot()))
    undo.append((credit, credit.snapshot()))
    debit.dp -= hold.amount_micros
    credit.cp -= hold.amount_micros
    if kind == _POST:
        debit.dpo += amount
        credit.cpo += amount
    else:
        amount = hold.amount_micros
    work.resolved[hold.id] = kind
    resolved_ids.append(hold.id)
    work.created[t.id] = StoredTransfer(
        id=t.id,
        debit_account_id=hold.debit_account_id,
        credit_account_id=hold.credit_account_id,
        amount_micros=amount,
        currency=hold.currency,
        code=t.code,
        flags=t.flags,
        pending_id=hold.id,
        timeout_s=0,
        reference=t.reference,
        metadata=t.metadata,
        created_at_us=work.now_us,
        expires_at_us=0,
    )
    return S.ok
