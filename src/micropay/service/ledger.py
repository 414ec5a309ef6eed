"""The ledger service: loads what a batch needs, calls the engine, persists atomically.

Write path for a batch of transfers:

1. If the batch is plain single transfers, try the *netted* plan: one guarded
   counter update per account and a bulk insert, with no reads
   (:mod:`micropay.core.netting`). If a guard or an id refuses it, roll back.
   After refusals the next attempts are skipped, more of them after each
   refusal in a row, since a batch that overdraws is usually followed by more;
   and while the plain path keeps rejecting transfers (which the guards would
   have refused), until it settles a batch with none.
2. A plain batch the guards refused takes the *plain* path: lock its
   accounts, settle it against their counters (``settle_plain``: the engine's
   checks for plain transfers) and write rows, remembered failures and
   counter deltas, taking its ids to be new. If one is taken, roll back.
3. Otherwise take the *exact* path: lock the accounts involved, load recorded
   ids, holds and resolutions, run :func:`micropay.core.engine.apply_batch`
   and persist its plan.

Both paths run inside one database transaction each; busy, serialization,
deadlock and concurrent-duplicate errors retry the whole operation, at most
``store_retries_max`` times, with jittered back-off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import TypeVar

from micropay.core import limits
from micropay.core.accounts import (
    Account,
    AccountResult,
    NewAccount,
    open_account,
    validate_new_account,
)
from micropay.core.engine import CounterDelta, LedgerView, apply_batch
from micropay.core.netting import netted_results, plan_netted, settle_plain
from micropay.core.statuses import AccountStatus, TransferStatus
from micropay.core.transfers import (
    RESOLVING_FLAGS,
    Rejection,
    StoredTransfer,
    Transfer,
    TransferFlags,
    TransferResult,
)
from micropay.service.ports import (
    LedgerStore,
    LedgerWriteTx,
)
from micropay.service.retry import run_with_retries

T = TypeVar("T")
Clock = Callable[[], int]


def system_clock_us() -> int:
    return time.time_ns() // 1_000


class BatchTooLarge(ValueError):
    """More items in one call than the ledger accepts (``batch_*_max``)."""


class _NettedRefused(Exception):
    """Internal: roll back the netted attempt and take the exact path."""


class Ledger:
    """Accounts and transfers on one store. One instance per thread."""

    def __init__(
        self,
        store: LedgerStore,
        *,
        clock: Clock = system_clock_us,
        retries_max: int = limits.store_retries_max,
        netted: bool = True,
        racy_for_tests: bool = False,
    ) -> None:
        self.store = store
        self._clock = clock
        self._retries_max = retries_max
        self._netted = netted and not racy_for_tests
        # Test-only switch (negative control): read in one transaction and write
        # in another, the classic check-then-act race. Never set in production.
        self._racy = racy_for_tests
        self.stats = {"netted": 0, "plain": 0, "exact": 0, "retries": 0}
        self._netted_misses = 0  # netted attempts refused in a row
        self._netted_skips = 0  # plain batches to send straight to the plain path

    # --- accounts -------------------------------------------------------

    def create_accounts(self, requests: Sequence[NewAccount]) -> list[AccountResult]:
        """Open accounts; an existing id with the same fields replays ``ok``."""
        if len(requests) > limits.batch_accounts_max:
            raise BatchTooLarge(f"at most {limits.batch_accounts_max} accounts per call")
        return self._retrying(lambda: self._create_accounts_once(requests))

    def _create_accounts_once(self, requests: Sequence[NewAccount]) -> list[AccountResult]:
        now_us = self._clock()
        statuses = [validate_new_account(r) for r in requests]
        ids = {r.id for r, s in zip(requests, statuses, strict=True) if s is AccountStatus.ok}
        results: list[AccountResult] = []
        with self.store.write() as tx:
            existing = tx.lock_accounts(ids)
            fresh: dict[int, Account] = {}
            for request, status in zip(requests, statuses, strict=True):
                if status is not AccountStatus.ok:
                    results.append(AccountResult(_int_or_zero(request.id), status))
                    continue
                known = existing.get(request.id) or fresh.get(request.id)
                if known is None:
                    fresh[request.id] = open_account(request, now_us)
                    results.append(AccountResult(request.id, AccountStatus.ok))
                elif known.same_request(request):
                    results.append(AccountResult(request.id, AccountStatus.ok, replayed=True))
                else:
                    results.append(
                        AccountResult(request.id, AccountStatus.exists_with_different_fields)
                    )
            if fresh:
                tx.insert_accounts(list(fresh.values()))
        return results

    # --- transfers ------------------------------------------------------

    def submit(self, batch: Sequence[Transfer]) -> list[TransferResult]:
        """Apply ``batch`` in order; one result per transfer, in the same order."""
        if len(batch) > limits.batch_transfers_max:
            raise BatchTooLarge(f"at most {limits.batch_transfers_max} transfers per call")
        if not batch:
            return []
        if self._racy:
            return self._retrying(lambda: self._submit_racy(batch))
        return self._retrying(lambda: self._submit_once(batch))

    def _submit_once(self, batch: Sequence[Transfer]) -> list[TransferResult]:
        now_us = self._clock()
        if self._netted:
            plan = plan_netted(batch, now_us)
            if plan is not None:
                if self._netted_skips:
                    self._netted_skips -= 1
                else:
                    try:
                        with self.store.write() as tx:
                            if not tx.try_netted(plan):
                                raise _NettedRefused
                        self.stats["netted"] += 1
                        self._netted_misses = 0
                        return netted_results(plan)
                    except _NettedRefused:
                        # Refusals come in runs (wallets running dry): after
                        # each miss in a row, skip twice as many attempts.
                        self._netted_misses = min(self._netted_misses + 1, _MISSES_MAX)
                        self._netted_skips = (1 << self._netted_misses) - 1
                try:
                    with self.store.write() as tx:
                        accounts = tx.lock_account_states(plan.account_ids)
                        outcome = settle_plain(plan, accounts)
                        if outcome is None:
                            raise _NettedRefused
                        if not tx.try_plain(outcome):
                            raise _NettedRefused
                    self.stats["plain"] += 1
                    if outcome.rejected_rows:
                        # The guards would have refused this batch too: the
                        # next one is likely the same (wallets stay dry).
                        self._netted_skips = max(self._netted_skips, 1)
                    else:
                        # They would have let it through: try the next one.
                        self._netted_misses = self._netted_skips = 0
                    return outcome.results
                except _NettedRefused:
                    pass
        return self._submit_exact(batch, now_us)

    def _submit_exact(
        self, batch: Sequence[Transfer], now_us: int, *, system: bool = False
    ) -> list[TransferResult]:
        with self.store.write() as tx:
            results = apply_in_transaction(tx, batch, now_us, system=system)
        self.stats["exact"] += 1
        return results

    def _submit_racy(self, batch: Sequence[Transfer]) -> list[TransferResult]:
        now_us = self._clock()
        with self.store.write() as tx:
            view = _load_view(tx, batch)
        time.sleep(0.001)  # widen the window between the check and the act
        outcome = apply_batch(batch, view, now_us)
        with self.store.write() as tx:
            tx.lock_accounts(view.accounts.keys())  # in id order: the race stays, deadlocks go
            _persist(tx, outcome.transfers, outcome.rejections, outcome.deltas)
        return outcome.results

    def expire_holds(self, *, limit: int = 1_000) -> list[TransferResult]:
        """Release holds whose timeout has passed. Returns one result per expired hold.

        The only caller of the system path: the expiry transfers use the reserved
        id ``expiry_id(hold)`` and the ``EXPIRE_PENDING`` flag, which clients cannot.
        """
        now_us = self._clock()
        with self.store.read() as reader:
            hold_ids = reader.expired_hold_ids(now_us, min(limit, limits.batch_transfers_max))
        batch = [
            Transfer(
                id=expiry_id(hold_id),
                debit_account_id=0,
                credit_account_id=0,
                amount_micros=0,
                currency="",
                flags=int(TransferFlags.EXPIRE_PENDING),
                pending_id=hold_id,
            )
            for hold_id in hold_ids
        ]
        if not batch:
            return []
        # Apply at the instant the holds were picked, or later: a clock stepping
        # back in between must not get "not expired" remembered under the id.
        return self._retrying(
            lambda: self._submit_exact(batch, max(now_us, self._clock()), system=True)
        )

    def submit_system(self, batch: Sequence[Transfer]) -> list[TransferResult]:
        """Submit the system's own transfers (reserved ids, ``EXPIRE_PENDING``).

        For micropay's jobs only: never pass a client's request here.
        """
        if len(batch) > limits.batch_transfers_max:
            raise BatchTooLarge(f"at most {limits.batch_transfers_max} transfers per call")
        if not batch:
            return []
        return self._retrying(lambda: self._submit_exact(batch, self._clock(), system=True))

    # --- reads ----------------------------------------------------------

    def accounts(self, ids: Collection[int]) -> dict[int, Account]:
        with self.store.read() as reader:
            return reader.get_accounts(ids)

    def transfers(self, ids: Collection[int]) -> dict[int, StoredTransfer]:
        with self.store.read() as reader:
            return reader.get_recorded(ids).transfers

    # --- infrastructure -------------------------------------------------

    def _retrying(self, operation: Callable[[], T]) -> T:
        def count_retry() -> None:
            self.stats["retries"] += 1

        return run_with_retries(operation, retries_max=self._retries_max, on_retry=count_retry)


_OK = TransferStatus.ok
_MISSES_MAX = 6  # skip at most 63 netted attempts after refusals


def expiry_id(hold_id: int) -> int:
    """The id of the transfer that expires ``hold_id``.

    Derived, so that two expiry runs racing on one hold are the same request:
    the second replays instead of failing. Ids at or above 2**62 are reserved
    for such system transfers.
    """
    return limits.system_id_min + (hold_id % limits.system_id_min)


def _int_or_zero(value: object) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _load_view(tx: LedgerWriteTx, batch: Sequence[Transfer]) -> LedgerView:
    ids: set[int] = set()
    pending_ids: set[int] = set()
    account_ids: set[int] = set()
    for t in batch:
        if type(t.id) is int:
            ids.add(t.id)
        if isinstance(t.flags, int) and t.flags & RESOLVING_FLAGS and type(t.pending_id) is int:
            pending_ids.add(t.pending_id)
        for account_id in (t.debit_account_id, t.credit_account_id):
            if type(account_id) is int and account_id > 0:
                account_ids.add(account_id)
    holds = tx.load_recorded(pending_ids).transfers if pending_ids else {}
    for hold in holds.values():
        account_ids.add(hold.debit_account_id)
        account_ids.add(hold.credit_account_id)
    # Lock before reading ids and resolutions: under READ COMMITTED, reads
    # after the lock see whatever a competing writer committed before it.
    accounts = tx.lock_accounts(account_ids)
    recorded = tx.load_recorded(ids | pending_ids)
    return LedgerView(
        accounts=accounts,
        transfers=recorded.transfers,
        rejections=recorded.rejections,
        resolutions=tx.load_resolutions(pending_ids),
    )


def _persist(
    tx: LedgerWriteTx,
    transfers: Sequence[StoredTransfer],
    rejections: Sequence[Rejection],
    deltas: Mapping[int, CounterDelta],
) -> None:
    if transfers:
        tx.insert_transfers(transfers)
    if rejections:
        tx.insert_rejections(rejections)
    if deltas:
        tx.apply_deltas(deltas)


def apply_in_transaction(
    tx: LedgerWriteTx, batch: Sequence[Transfer], now_us: int, *, system: bool = False
) -> list[TransferResult]:
    """Apply ``batch`` by the exact path inside the caller's write transaction.

    For operations that must commit ledger transfers atomically with their own
    rows (a purchase and its entitlement). The caller owns the transaction and
    its retries.
    """
    if len(batch) > limits.batch_transfers_max:
        raise BatchTooLarge(f"at most {limits.batch_transfers_max} transfers per call")
    view = _load_view(tx, batch)
    outcome = apply_batch(batch, view, now_us, system=system)
    _persist(tx, outcome.transfers, outcome.rejections, outcome.deltas)
    return outcome.results
