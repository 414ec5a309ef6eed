"""Group commit for API requests: many requests' transactions in one database commit.

A purchase paid from the wallet, the tab or store credit is one short write
transaction. Run one per request, concurrent purchases queue on the write lock
(SQLite) or on the hot merchant's account row (PostgreSQL), and each pays a
commit (an fsync) of its own. The batcher runs such request transactions on
one writer thread instead: it takes every request queued while the previous
commit ran, runs them one after another inside ONE transaction and commits
once. Each request still sees exactly the effects of the ones before it (same
transaction, in order), so results are those of running them one by one.

The contract for a request function ``fn(tx)``: it may run again (a transient
store error retries the whole batch), and if it raises one of the ``clean``
exception types it has written nothing. Any other exception (a bug, a database
error) rolls the whole batch back; then each request of that batch runs again
in a transaction of its own, so one bad request fails alone.

A request awaits its result on the event loop: no threadpool thread is held
while it waits for the commit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

T = TypeVar("T")
log = logging.getLogger("micropay.api")

# PostgreSQL keeps at most 64 subtransaction ids per backend in shared memory;
# the batch uses none, but a larger batch also holds the hot merchant's row lock
# longer. 64 requests a commit already turn the fsync into noise.
batch_requests_max = 64


@dataclass(slots=True)
class _Request(Generic[T]):
    fn: Callable[[Any], T]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[T]


def _settle(future: asyncio.Future[Any], value: Any, error: BaseException | None) -> None:
    if future.done():  # the request was cancelled (its client went away)
        return
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(value)


class WriteBatcher:
    """One writer thread that commits queued request transactions together.

    ``run_tx(operation)`` runs ``operation(tx)`` in one write transaction with
    the store's bounded retries (``Runtime.write``); it is called on the writer
    thread only.
    """

    def __init__(
        self,
        run_tx: Callable[[Callable[[Any], Any]], Any],
        *,
        clean: tuple[type[BaseException], ...],
        batch_max: int = batch_requests_max,
        name: str = "micropay-batcher",
    ) -> None:
        self._run_tx = run_tx
        self._clean = clean
        self._batch_max = batch_max
        self._name = name
        self._queue: deque[_Request[Any] | None] = deque()
        self._wake = threading.Condition(threading.Lock())
        self._thread: threading.Thread | None = None
        self._closed = False
        self.batches = 0  # commits made (for tests and metrics)
        self.requests = 0

    async def run(self, fn: Callable[[Any], T]) -> T:
        """Run ``fn(tx)`` in the next batch; its result, or its exception."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[T] = loop.create_future()
        with self._wake:
            if self._closed:
                raise RuntimeError("the write batcher is closed")
            if self._thread is None:
                self._thread = threading.Thread(target=self._main, name=self._name, daemon=True)
                self._thread.start()
            self._queue.append(_Request(fn, loop, future))
            self._wake.notify()
        return await future

    def close(self) -> None:
        """Finish what is queued, then stop the writer thread."""
        with self._wake:
            if self._closed:
                return
            self._closed = True
            self._queue.append(None)
            self._wake.notify()
            thread = self._thread
        if thread is not None:
            thread.join()

    # --- the writer thread ---------------------------------------------------------

    def _take(self) -> tuple[list[_Request[Any]], bool]:
        with self._wake:
            while not self._queue:
                self._wake.wait()
            taken: list[_Request[Any]] = []
            while self._queue and len(taken) < self._batch_max:
                item = self._queue.popleft()
                if item is None:
                    return taken, True
                taken.append(item)
            return taken, False

    def _main(self) -> None:
        stop = False
        while not stop:
            batch, stop = self._take()
            if batch:
                self._commit(batch)

    def _commit(self, batch: list[_Request[Any]]) -> None:
        clean = self._clean

        def body(tx: Any) -> list[tuple[Any, BaseException | None]]:
            outcomes: list[tuple[Any, BaseException | None]] = []
            for request in batch:
                try:
                    outcomes.append((request.fn(tx), None))
                except clean as error:
                    outcomes.append((None, error))
            return outcomes

        try:
            outcomes = self._run_tx(body)
        except Exception:
            if len(batch) == 1:
                outcomes = [self._alone(batch[0])]
            else:
                log.warning("a batch of %d requests rolled back; each runs alone", len(batch))
                outcomes = [self._alone(request) for request in batch]
        else:
            self.batches += 1
            self.requests += len(batch)
        for request, (value, error) in zip(batch, outcomes, strict=True):
            # RuntimeError: that event loop has closed, nobody waits any more.
            with contextlib.suppress(RuntimeError):
                request.loop.call_soon_threadsafe(_settle, request.future, value, error)

    def _alone(self, request: _Request[Any]) -> tuple[Any, BaseException | None]:
        try:
            value = self._run_tx(request.fn)
        except Exception as error:
            return None, error
        self.batches += 1
        self.requests += 1
        return value, None
