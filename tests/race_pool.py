"""A pool of long-lived worker processes that race ledger operations together.

Each worker process opens one store connection (and one :class:`Ledger`) per
thread *slot* and keeps them for the life of the pool, so rounds cost no
process start-up. A round gives every slot a list of operations; all slots of
all processes wait on one shared :class:`multiprocessing.Barrier` and are
released together, then run their operations and report the results.

Operations (plain tuples, so they pickle cheaply):

- ``("submit", clock_us | None, [transfer_tuple, ...])``: one ``Ledger.submit``
  of that batch; the result is ``[(status, replayed), ...]``.
- ``("submit_system", clock_us | None, [transfer_tuple, ...])``: the same through
  ``Ledger.submit_system`` (reserved ids, ``EXPIRE_PENDING``).
- ``("expire", clock_us)``: ``Ledger.expire_holds()``; same result shape.

An exception becomes ``[("error:<type>: <message>", False)]`` so the test, not
the worker, decides whether errors are allowed.
"""

from __future__ import annotations

import multiprocessing
import queue
import threading
from collections.abc import Sequence
from dataclasses import astuple
from types import TracebackType
from typing import Any

from micropay.core.transfers import Transfer

Op = tuple[Any, ...]
Result = list[tuple[str, bool]]
BARRIER_TIMEOUT_S = 60.0
ROUND_TIMEOUT_S = 120.0


def transfer_tuple(t: Transfer) -> tuple[Any, ...]:
    return astuple(t)


class _Clock:
    """A per-slot clock: a fixed instant when set, else the system clock."""

    def __init__(self) -> None:
        self.fixed_us: int | None = None

    def __call__(self) -> int:
        if self.fixed_us is not None:
            return self.fixed_us
        from micropay.service.ledger import system_clock_us

        return system_clock_us()


def _run_op(ledger: Any, clock: _Clock, op: Op) -> Result:
    kind = op[0]
    clock.fixed_us = op[1]
    try:
        if kind == "submit":
            results = ledger.submit([Transfer(*fields) for fields in op[2]])
        elif kind == "submit_system":
            results = ledger.submit_system([Transfer(*fields) for fields in op[2]])
        elif kind == "expire":
            results = ledger.expire_holds()
        else:
            raise ValueError(f"unknown op {kind!r}")
    except Exception as error:  # reported to the test, which decides
        return [(f"error:{type(error).__name__}: {error}", False)]
    return [(r.status.value, r.replayed) for r in results]


def _run_slot(
    barrier: Any,
    ledger: Any,
    clock: _Clock,
    ops: Sequence[Op],
    results: list[list[Result]],
    index: int,
) -> None:
    try:
        barrier.wait(timeout=BARRIER_TIMEOUT_S)
    except threading.BrokenBarrierError:
        results[index] = [[("error:BrokenBarrierError", False)]]
        return
    results[index] = [_run_op(ledger, clock, op) for op in ops]


def _worker_main(
    url: str,
    slots: int,
    racy: bool,
    ignore_check: bool,
    barrier: Any,
    commands: Any,
    replies: Any,
) -> None:
    from micropay.service.ledger import Ledger
    from micropay.store import open_store

    clocks = [_Clock() for _ in range(slots)]
    ledgers = []
    for clock in clocks:
        store = open_store(url)
        if ignore_check:
            # SQLite only: the negative control switches the CHECK constraints off.
            store._conn.execute("PRAGMA ignore_check_constraints=ON")  # type: ignore[attr-defined]
        ledgers.append(Ledger(store, clock=clock, racy_for_tests=racy))
    replies.put(("ready", None))
    try:
        while True:
            command = commands.get(timeout=600)
            if command is None:
                return
            results: list[list[Result]] = [[] for _ in range(slots)]

            threads = [
                threading.Thread(
                    target=_run_slot,
                    args=(barrier, ledgers[i], clocks[i], command[i], results, i),
                    daemon=True,
                )
                for i in range(slots)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=ROUND_TIMEOUT_S)
            if any(thread.is_alive() for thread in threads):
                replies.put(("error", "a worker thread did not finish in time"))
                return
            replies.put(("round", results))
    finally:
        for ledger in ledgers:
            ledger.store.close()


class RacePool:
    """``processes`` spawned workers with ``slots`` threads each (own connections)."""

    def __init__(
        self,
        url: str,
        *,
        processes: int = 2,
        slots: int = 32,
        racy: bool = False,
        ignore_check: bool = False,
    ) -> None:
        self.processes = processes
        self.slots = slots
        context = multiprocessing.get_context("spawn")
        self._barrier = context.Barrier(processes * slots)
        self._commands: list[Any] = [context.Queue() for _ in range(processes)]
        self._replies: list[Any] = [context.Queue() for _ in range(processes)]
        self._procs = [
            context.Process(
                target=_worker_main,
                args=(
                    url,
                    slots,
                    racy,
                    ignore_check,
                    self._barrier,
                    self._commands[i],
                    self._replies[i],
                ),
                daemon=True,
            )
            for i in range(processes)
        ]
        for proc in self._procs:
            proc.start()
        for i in range(processes):
            kind, detail = self._get(i)
            if kind != "ready":
                raise RuntimeError(f"worker {i} failed to start: {detail}")

    def _get(self, i: int) -> tuple[str, Any]:
        """The next reply of worker ``i``; fails fast if it died, bounded by ``ROUND_TIMEOUT_S``."""
        for _ in range(int(ROUND_TIMEOUT_S)):
            try:
                reply: tuple[str, Any] = self._replies[i].get(timeout=1.0)
            except queue.Empty:
                if not self._procs[i].is_alive():
                    code = self._procs[i].exitcode
                    raise RuntimeError(f"worker {i} died (exit code {code})") from None
                continue
            return reply
        raise RuntimeError(f"worker {i} did not answer within {ROUND_TIMEOUT_S} s")

    def run_round(self, plan: Sequence[Sequence[Sequence[Op]]]) -> list[list[list[Result]]]:
        """``plan[process][slot]`` is that slot's op list; returns results in the same shape."""
        assert len(plan) == self.processes
        for i, per_slot in enumerate(plan):
            assert len(per_slot) == self.slots
            self._commands[i].put([list(ops) for ops in per_slot])
        out = []
        for i in range(self.processes):
            kind, detail = self._get(i)
            if kind != "round":
                raise RuntimeError(f"worker {i}: {detail}")
            out.append(detail)
        return out

    def close(self) -> None:
        for commands in self._commands:
            commands.put(None)
        for proc in self._procs:
            proc.join(timeout=30)
            if proc.is_alive():
                proc.kill()
                proc.join(timeout=10)
        for q in (*self._commands, *self._replies):
            q.close()
            q.join_thread()

    def __enter__(self) -> RacePool:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def spread(
    ops_per_slot: Sequence[Sequence[Op]], processes: int, slots: int
) -> list[list[list[Op]]]:
    """Lay out a flat list of per-slot op lists over ``processes x slots`` (padding with none)."""
    flat = list(ops_per_slot) + [[] for _ in range(processes * slots - len(ops_per_slot))]
    assert len(flat) == processes * slots, "more op lists than slots"
    # Alternate processes so that neighbouring op lists run in different processes.
    return [[list(flat[s * processes + p]) for s in range(slots)] for p in range(processes)]
