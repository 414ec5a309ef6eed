"""Group commit: many concurrent callers share one database transaction.

Each caller's batch waits in a bounded queue; one writer thread drains what is
queued (up to ``batch_transfers_max`` transfers), applies it as one ledger
batch (one fsync), and hands each caller its own results. Callers' batches
stay independent: each must close its own linked chain, and a chain never
spans two callers.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import Future

from micropay.core import limits
from micropay.core.statuses import TransferStatus
from micropay.core.transfers import Transfer, TransferFlags, TransferResult
from micropay.service.ledger import BatchTooLarge, Ledger


class Overloaded(RuntimeError):
    """The group-commit queue is full: shed load (HTTP 503) rather than queue without bound."""


_Item = tuple[Sequence[Transfer], "Future[list[TransferResult]]"]
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
        self._queue: queue.Queue[object] = queue.Queue(maxsize=queue_max)
        self._batch_max = min(batch_max, limits.batch_transfers_max)
        self._ledger_factory = ledger_factory
        self.commits = 0
        self._thread = threading.Thread(target=self._run, name="micropay-group-commit", daemon=True)
        self._thread.start()

    def submit(self, batch: Sequence[Transfer]) -> Future[list[TransferResult]]:
        """Queue ``batch``; the future resolves to its results once committed."""
        future: Future[list[TransferResult]] = Future()
        if len(batch) > self._batch_max:
            future.set_exception(BatchTooLarge(f"at most {self._batch_max} transfers per call"))
            return future
        if not batch:
            future.set_result([])
            return future
        if _chain_left_open(batch):
            # Refused whole: merged with other callers' batches, an open chain
            # would link into theirs.
            future.set_result(
                [
                    TransferResult(
                        t.id if type(t.id) is int else 0, TransferStatus.linked_event_chain_open
                    )
                    for t in batch
                ]
            )
            return future
        try:
            self._queue.put((batch, future), timeout=limits.group_commit_wait_s_max)
        except queue.Full:
            future.set_exception(Overloaded("group commit queue is full"))
        return future

    def transfer(self, batch: Sequence[Transfer]) -> list[TransferResult]:
        """Submit and wait (bounded by ``group_commit_wait_s_max``)."""
        return self.submit(batch).result(timeout=limits.group_commit_wait_s_max)

    def close(self) -> None:
        self._queue.put(_STOP)
        self._thread.join(timeout=limits.group_commit_wait_s_max)

    def _run(self) -> None:
        ledger = self._ledger_factory()
        try:
            while True:
                first = self._queue.get()
                if first is _STOP:
                    return
                items: list[_Item] = [first]  # type: ignore[list-item]
                size = len(items[0][0])
                stop = False
                while size < self._batch_max:
                    try:
                        item = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if item is _STOP:
                        stop = True
                        break
                    batch = item[0]  # type: ignore[index]
                    if size + len(batch) > self._batch_max:
                        self._commit(ledger, items)
                        items, size = [], 0
                    items.append(item)  # type: ignore[arg-type]
                    size += len(batch)
                if items:
                    self._commit(ledger, items)
                if stop:
                    return
        finally:
            ledger.store.close()

    def _commit(self, ledger: Ledger, items: list[_Item]) -> None:
        merged = [t for batch, _ in items for t in batch]
        try:
            results = ledger.submit(merged)
        except Exception as error:  # infrastructure failure: every caller learns it
            for _, future in items:
                future.set_exception(error)
            return
        self.commits += 1
        offset = 0
        for batch, future in items:
            future.set_result(results[offset : offset + len(batch)])
            offset += len(batch)


def _chain_left_open(batch: Sequence[Transfer]) -> bool:
    last = batch[-1].flags
    return bool(isinstance(last, int) and last & TransferFlags.LINKED)
