"""Group commit: many concurrent callers share one database transaction.

Each caller's batch waits in a bounded queue; one writer thread drains what is
queued (up to ``batch_transfers_max`` transfers per commit), applies it as one
ledger batch (one fsync), and hands each caller its own results. Callers' batches
stay independent: each must close its own linked chain, and a chain never
spans two callers.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import cast

from micropay.core import limits
from micropay.core.statuses import TransferStatus
from micropay.core.transfers import Transfer, TransferFlags, TransferResult
from micropay.service.ledger import BatchTooLarge, Ledger


class Overloaded(RuntimeError):
    """The group-commit queue is full: shed load (HTTP 503) rather than queue without bound."""


class _Waiter:
    """One caller's batch, and the lock it sleeps on until the writer has its results.

    A bare lock, acquired at creation and released by the writer, is the
    cheapest way to park and wake a thread in CPython: one futex, no
    condition variable. Futures and ``queue.Queue`` cost several times more
    per hand-off, and with many callers the hand-offs are the bottleneck.
    """

    __slots__ = ("batch", "done", "error", "results")

    def __init__(self, batch: Sequence[Transfer]) -> None:
        self.batch = batch
        self.done = threading.Lock()
        self.done.acquire()
        self.results: list[TransferResult] = []
        self.error: BaseException | None = None


_STOP = object()


class GroupCommitter:
    """Runs one writer thread over a :class:`Ledger` that the thread owns."""

    def __init__(
        self,
        ledger_factory: Callable[[], Ledger],
        *,
        queue_max: int = limits.group_commit_queue_max,
        batch_max: int = limits.batch_transfers_max,
    ) -> None:
        # deque appends and pops are atomic: callers append, the writer pops.
        self._pending: deque[_Waiter | object] = deque()
        self._queue_max = queue_max
        self._wake = threading.Event()
        self._idle = False  # the writer is waiting for work (callers then wake it)
        self._batch_max = min(batch_max, limits.batch_transfers_max)
        self._ledger_factory = ledger_factory
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="micropay-group-commit", daemon=True)
        self._thread.start()

    def transfer(self, batch: Sequence[Transfer]) -> list[TransferResult]:
        """Apply ``batch`` in a shared commit and return its results (waits at most
        ``group_commit_wait_s_max``)."""
        if len(batch) > self._batch_max:
            raise BatchTooLarge(f"at most {self._batch_max} transfers per call")
        if not batch:
            return []
        if _chain_left_open(batch):
            # Refused whole: merged with other callers' batches, an open chain
            # would link into theirs.
            return [
                TransferResult(
                    t.id if type(t.id) is int else 0, TransferStatus.linked_event_chain_open
                )
                for t in batch
            ]
        if len(self._pending) >= self._queue_max:
            raise Overloaded("group commit queue is full")
        waiter = _Waiter(batch)
        self._pending.append(waiter)
        if self._idle:  # a busy writer drains the queue before it sleeps again
            self._wake.set()
        if not waiter.done.acquire(timeout=limits.group_commit_wait_s_max):
            raise TimeoutError("group commit did not answer in time")
        if waiter.error is not None:
            raise waiter.error
        return waiter.results

    def close(self) -> None:
        self._pending.append(_STOP)
        self._wake.set()
        self._thread.join(timeout=limits.group_commit_wait_s_max)

    def _run(self) -> None:
        ledger = self._ledger_factory()
        pending, wake = self._pending, self._wake
        try:
            while True:
                # Idle first, then look: a caller appending after the look sees
                # the flag and wakes the writer; one appending before is seen.
                self._idle = True
                if not pending:
                    wake.wait()
                wake.clear()
                self._idle = False
                _linger(pending)
                items: list[_Waiter] = []
                size = 0
                while pending:
                    item = pending.popleft()
                    if item is _STOP:
                        if items:
                            self._commit(ledger, items)
                        return
                    waiter = cast(_Waiter, item)
                    if size + len(waiter.batch) > self._batch_max:
                        self._commit(ledger, items)
                        items, size = [], 0
                    items.append(waiter)
                    size += len(waiter.batch)
                if items:
                    self._commit(ledger, items)
        finally:
            ledger.store.close()

    def _commit(self, ledger: Ledger, items: list[_Waiter]) -> None:
        merged = [t for waiter in items for t in waiter.batch]
        try:
            results = ledger.submit(merged)
        except Exception as error:  # infrastructure failure: every caller learns it
            for waiter in items:
                waiter.error = error
                waiter.done.release()
            return
        self.commits += 1
        offset = 0
        for waiter in items:
            end = offset + len(waiter.batch)
            waiter.results = results[offset:end]
            offset = end
            waiter.done.release()


def _linger(pending: deque[_Waiter | object]) -> None:
    """Let callers that are still running hand in their batches before the commit.

    Callers woken by the last commit are busy returning and preparing their
    next batch. Committing at once would leave them to run during the commit,
    each taking the interpreter lock between the writer's database calls; the
    commit would take several times longer and carry half of them. Yielding
    while the queue still grows (bounded by ``group_commit_linger_s_max``)
    lets them finish first, so a commit carries them all and runs alone.
    """
    deadline = time.monotonic() + limits.group_commit_linger_s_max
    seen = len(pending)
    while True:
        time.sleep(0)
        now = len(pending)
        if now == seen or time.monotonic() >= deadline:
            return
        seen = now


def _chain_left_open(batch: Sequence[Transfer]) -> bool:
    last = batch[-1].flags
    return bool(isinstance(last, int) and last & TransferFlags.LINKED)
