"""The durable job runner: each job runs once across threads, processes, crashes and restarts.

Effects are counted in a test table (``job_effects``, no unique key, so a
second run would show as a second row). Jobs come in both kinds: ``*_tx``
writes its effect in the transaction that marks the job done; ``*_own``
writes it in its own transaction (idempotently, as real jobs must) before
the job is marked done.

Also run as a subprocess by these tests: ``python tests/test_worker.py race|hang URL``.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from micropay.core.accounts import AccountFlags, NewAccount
from micropay.core.transfers import Transfer, TransferFlags
from micropay.processors.simulated import SimulatedProcessor
from micropay.service.ledger import Clock, system_clock_us
from micropay.service.payments import Payments
from micropay.service.reconcile import reconcile
from micropay.store import open_store
from micropay.worker import Job, JobSpec, Registry, Worker, payments_registry
from micropay.worker.jobs import jobs_tx, period_run_key

subprocess_timeout_s = 60.0


def create_effects(store: Any) -> None:
    store.execute_raw("CREATE TABLE job_effects (run_key VARCHAR(200) NOT NULL, tag VARCHAR(40))")


def effect_counts(store: Any) -> dict[str, int]:
    with store.read() as tx:
        tx._cur.execute("SELECT run_key, COUNT(*) FROM job_effects GROUP BY run_key")
        return {row[0]: int(row[1]) for row in tx._cur.fetchall()}


def _insert_effect(tx: Any, run_key: str, tag: str) -> None:
    tx._cur.execute(tx._sql("INSERT INTO job_effects (run_key, tag) VALUES (?, ?)"), (run_key, tag))


def _insert_effect_once(tx: Any, run_key: str, tag: str) -> None:
    tx._cur.execute(tx._sql("SELECT 1 FROM job_effects WHERE run_key = ?"), (run_key,))
    if not tx._cur.fetchall():
        _insert_effect(tx, run_key, tag)


def make_registry(
    store: Any, tag: str, *, hang: Callable[[str], None] | None = None, lease_s: float = 30.0
) -> Registry:
    """record_tx / record_own; with ``hang``, called after the effect is written (not committed
    for record_tx, committed for record_own)."""

    def record_tx(tx: Any, job: Job) -> None:
        _insert_effect(tx, job.run_key, tag)
        if hang is not None:
            hang(job.run_key)

    def record_own(job: Job) -> None:
        with store.write() as tx:
            _insert_effect_once(tx, job.run_key, tag)
        if hang is not None:
            hang(job.run_key)

    registry = Registry()
    registry.register(JobSpec("record_tx", run_in_tx=record_tx, lease_s=lease_s))
    registry.register(JobSpec("record_own", run=record_own, lease_s=lease_s))
    return registry


def enqueue_records(worker: Worker, count: int, due_at_us: int) -> list[str]:
    keys = []
    for i in range(count):
        name = "record_tx" if i % 2 == 0 else "record_own"
        key = f"{name}:{i}"
        assert worker.enqueue(name, key, due_at_us=due_at_us)
        keys.append(key)
    return keys


@pytest.fixture
def opened(database_url: str) -> Iterator[Callable[[], Any]]:
    """Opens extra connections to the test's database; closes them all at the end."""
    stores: list[Any] = []

    def make() -> Any:
        s = open_store(database_url)
        stores.append(s)
        return s

    yield make
    for s in stores:
        s.close()


# --- enqueueing -------------------------------------------------------------


def test_enqueue_twice_is_one_job(store: Any, clock: Clock) -> None:
    worker = Worker(store, make_registry(store, "w"), clock=clock)
    create_effects(store)
    assert worker.enqueue("record_tx", "record_tx:a", payload={"n": 1})
    assert not worker.enqueue("record_tx", "record_tx:a", payload={"n": 2})
    jobs = worker.jobs()
    assert [(j.run_key, j.payload, j.state, j.attempts) for j in jobs] == [
        ("record_tx:a", '{"n":1}', "pending", 0)
    ]
    assert [o.state for o in worker.run_due()] == ["done"]
    assert worker.run_due() == []
    assert not worker.enqueue("record_tx", "record_tx:a")  # done keys stay taken
    assert effect_counts(store) == {"record_tx:a": 1}


def test_scheduler_enqueues_each_period_once(store: Any, clock: Any) -> None:
    ran: list[tuple[str, int]] = []
    registry = Registry()
    registry.register(
        JobSpec("tick", run=lambda job: ran.append((job.run_key, job.due_at_us)), every_s=60)
    )
    worker = Worker(store, registry, clock=clock)
    key, start = period_run_key("tick", 60, clock())
    assert key == "tick:2026-01-01T00:00Z"
    assert start == clock()
    assert worker.schedule() == [key]
    clock.advance(59)
    assert worker.schedule() == []  # same minute
    assert [o.run_key for o in worker.tick()] == [key]
    clock.advance(1)
    assert worker.schedule() == ["tick:2026-01-01T00:01Z"]
    assert worker.schedule() == []
    worker.run_due()
    assert ran == [(key, start), ("tick:2026-01-01T00:01Z", start + 60_000_000)]
    assert period_run_key("x", 86_400, start + 5)[0] == "x:2026-01-01"


def test_unknown_job_names_are_refused(store: Any) -> None:
    with pytest.raises(ValueError, match="unknown jobs: nope"):
        Worker(store, make_registry(store, "w"), names=["record_tx", "nope"])
    with pytest.raises(ValueError, match="exactly one"):
        JobSpec("both", run=lambda job: None, run_in_tx=lambda tx, job: None)
    with pytest.raises(ValueError, match="without ':'"):
        JobSpec("a:b", run=lambda job: None)


# --- restarts, retries, leases --------------------------------------------------


def test_restart_picks_up_due_jobs(database_url: str, clock: Any) -> None:
    first = open_store(database_url)
    create_effects(first)
    keys = enqueue_records(Worker(first, make_registry(first, "a"), clock=clock), 4, clock())
    later = Worker(first, make_registry(first, "a"), clock=clock)
    later.enqueue("record_tx", "record_tx:later", due_at_us=clock() + 60_000_000)
    first.close()  # the process stops before running anything

    second = open_store(database_url)
    try:
        worker = Worker(second, make_registry(second, "b"), clock=clock)
        assert sorted(o.run_key for o in worker.run_due()) == sorted(keys)
        assert worker.run_due() == []  # the later one is not due yet
        clock.advance(60)
        assert [o.run_key for o in worker.run_due()] == ["record_tx:later"]
        assert effect_counts(second) == dict.fromkeys([*keys, "record_tx:later"], 1)
    finally:
        second.close()


def test_failures_retry_with_backoff_then_fail(store: Any, clock: Any) -> None:
    calls: dict[str, int] = {"flaky": 0, "broken": 0}

    def flaky(job: Job) -> None:
        calls["flaky"] += 1
        if calls["flaky"] <= 2:
            raise RuntimeError(f"down {calls['flaky']}")

    def broken(tx: Any, job: Job) -> None:
        calls["broken"] += 1
        raise ValueError("bad data")

    registry = Registry()
    registry.register(JobSpec("flaky", run=flaky, attempts_max=3, backoff_s=10))
    registry.register(JobSpec("broken", run_in_tx=broken, attempts_max=2, backoff_s=5))
    worker = Worker(store, registry, clock=clock)
    t0 = clock()
    worker.enqueue("flaky", "flaky:1")
    worker.enqueue("broken", "broken:1")

    first = {o.run_key: o for o in worker.run_due()}
    assert {k: (o.state, o.error) for k, o in first.items()} == {
        "flaky:1": ("retry", "RuntimeError: down 1"),
        "broken:1": ("retry", "ValueError: bad data"),
    }
    assert worker.job("flaky:1").due_at_us == t0 + 10_000_000  # type: ignore[union-attr]
    assert worker.job("broken:1").due_at_us == t0 + 5_000_000  # type: ignore[union-attr]
    assert worker.run_due() == []  # backing off
    clock.advance(5)
    assert [(o.run_key, o.state) for o in worker.run_due()] == [("broken:1", "failed")]
    clock.advance(5)
    assert [(o.run_key, o.state) for o in worker.run_due()] == [("flaky:1", "retry")]
    assert worker.job("flaky:1").due_at_us == clock() + 20_000_000  # type: ignore[union-attr]  # doubled
    clock.advance(20)
    assert [(o.run_key, o.state) for o in worker.run_due()] == [("flaky:1", "done")]
    clock.advance(3_600)
    assert worker.run_due() == []  # failed and done jobs are never claimed again
    broken_row = worker.job("broken:1")
    assert broken_row is not None
    assert (broken_row.state, broken_row.attempts, broken_row.last_error) == (
        "failed",
        2,
        "ValueError: bad data",
    )
    assert calls == {"flaky": 3, "broken": 2}


def test_expired_lease_is_taken_over_and_the_old_owner_cannot_finish(
    store: Any, opened: Callable[[], Any], clock: Any
) -> None:
    create_effects(store)
    other_store = opened()
    runs: list[str] = []

    def slow(job: Job) -> None:
        runs.append(job.run_key)
        if len(runs) == 1:
            # The first worker stalls past its lease; the second takes the job over.
            clock.advance(11)
            assert [o.state for o in b.run_due()] == ["done"]

    registry = Registry()
    registry.register(JobSpec("slow", run=slow, lease_s=10))
    a = Worker(store, registry, clock=clock, owner="a")
    b = Worker(other_store, registry, clock=clock, owner="b")
    a.enqueue("slow", "slow:1")
    assert [o.state for o in a.run_due()] == ["lease_lost"]
    row = a.job("slow:1")
    assert row is not None
    assert (row.state, row.attempts) == ("done", 2)
    assert runs == ["slow:1", "slow:1"]  # run twice: why ``run`` jobs must be idempotent


def test_last_attempt_dying_fails_the_job(store: Any, clock: Any) -> None:
    registry = Registry()
    registry.register(JobSpec("once", run=lambda job: None, attempts_max=1, lease_s=10))
    worker = Worker(store, registry, clock=clock, owner="dead")
    worker.enqueue("once", "once:1")
    # A worker claims it and dies (the claim alone, as the runner does it).
    with store.write() as tx:
        assert jobs_tx(tx).claim_due_job("dead", clock(), clock() + 10_000_000, ["once"])
    assert worker.run_due() == []  # leased
    clock.advance(10)
    assert worker.run_due() == []  # lease expired, but no attempt is left
    row = worker.job("once:1")
    assert row is not None
    assert (row.state, row.lease_owner) == ("failed", None)
    assert row.last_error == "the lease of the last attempt expired"


# --- races --------------------------------------------------------------------


def test_two_worker_threads_run_each_job_once(
    store: Any, opened: Callable[[], Any], clock: Any
) -> None:
    create_effects(store)
    keys = enqueue_records(Worker(store, make_registry(store, "setup"), clock=clock), 40, clock())
    start = threading.Barrier(2, timeout=subprocess_timeout_s)
    outcomes: dict[str, list[Any]] = {}
    errors: list[BaseException] = []

    def work(tag: str) -> None:
        try:
            own = opened()
            worker = Worker(own, make_registry(own, tag), clock=clock, owner=tag)
            start.wait()
            outcomes[tag] = worker.run_due()
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=work, args=(t,)) for t in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join(subprocess_timeout_s)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    ran = [o.run_key for got in outcomes.values() for o in got]
    assert sorted(ran) == sorted(keys)  # each claimed once
    assert {o.state for got in outcomes.values() for o in got} == {"done"}
    assert effect_counts(store) == dict.fromkeys(keys, 1)
    assert {j.state for j in Worker(store, Registry(), clock=clock).jobs()} == {"done"}


def _spawn(mode: str, database_url: str, tag: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, __file__, mode, database_url, tag],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )


def _reap(proc: subprocess.Popen[str]) -> None:
    if proc.poll() is None:
        proc.kill()
    proc.wait(subprocess_timeout_s)
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            pipe.close()


def _read_line(proc: subprocess.Popen[str]) -> str:
    """The child's next line, or fail after ``subprocess_timeout_s``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(subprocess_timeout_s):
            proc.kill()
            pytest.fail(f"no line from the worker process within {subprocess_timeout_s} s")
    return proc.stdout.readline().strip()


def test_two_worker_processes_run_each_job_once(store: Any, database_url: str, clock: Any) -> None:
    create_effects(store)
    keys = enqueue_records(
        Worker(store, make_registry(store, "setup"), clock=clock), 30, system_clock_us()
    )
    procs = [_spawn("race", database_url, tag) for tag in ("p1", "p2")]
    try:
        assert [_read_line(p) for p in procs] == ["ready", "ready"]
        for p in procs:
            assert p.stdin is not None
            p.stdin.write("go\n")
            p.stdin.flush()
        ran = [json.loads(_read_line(p)) for p in procs]
        for p in procs:
            assert p.wait(subprocess_timeout_s) == 0
    finally:
        for p in procs:
            _reap(p)
    assert sorted(k for got in ran for k in got) == sorted(keys)
    assert effect_counts(store) == dict.fromkeys(keys, 1)


@pytest.mark.parametrize("name", ["record_tx", "record_own"])
def test_worker_killed_mid_job_is_taken_over_once(
    store: Any, database_url: str, clock: Any, name: str
) -> None:
    create_effects(store)
    key = f"{name}:killed"
    Worker(store, make_registry(store, "setup"), clock=clock).enqueue(
        name, key, due_at_us=system_clock_us()
    )
    proc = _spawn("hang", database_url, "victim")
    try:
        assert _read_line(proc) == f"running {key}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait(subprocess_timeout_s) == -signal.SIGKILL
    finally:
        _reap(proc)
    # Committed before the kill: the claim; for record_own also its effect.
    row = Worker(store, Registry(), clock=clock).job(key)
    assert row is not None
    assert (row.state, row.attempts) == ("pending", 1)
    assert effect_counts(store) == ({key: 1} if name == "record_own" else {})

    later = type(clock)(system_clock_us())
    worker = Worker(store, make_registry(store, "rescuer"), clock=later, owner="rescuer")
    assert worker.run_due() == []  # the dead worker's lease still holds
    later.advance(31)  # past the 30 s lease
    # PostgreSQL rolls the killed session back when it sees the socket close;
    # until then its row lock hides the job from SKIP LOCKED. Bounded wait.
    deadline = time.monotonic() + subprocess_timeout_s
    outcomes = worker.run_due()
    while not outcomes and time.monotonic() < deadline:
        time.sleep(0.05)
        outcomes = worker.run_due()
    assert [(o.run_key, o.state) for o in outcomes] == [(key, "done")]
    row = worker.job(key)
    assert row is not None
    assert (row.state, row.attempts) == ("done", 2)
    assert effect_counts(store) == {key: 1}


# --- micropay's jobs ------------------------------------------------------------


def test_payments_jobs_run_once_per_period(store: Any, clock: Any) -> None:
    payments = Payments(store, SimulatedProcessor(), clock=clock)
    ledger = payments.ledger
    wallet = int(AccountFlags.DEBITS_MUST_NOT_EXCEED_CREDITS)
    ledger.create_accounts(
        [NewAccount(1, "USD", "processor_clearing"), NewAccount(2, "USD", "w", flags=wallet)]
    )
    ledger.create_accounts([NewAccount(3, "USD", "merchant_payable")])
    assert ledger.submit([Transfer(10, 1, 2, 1_000_000, "USD")])[0].ok
    hold = Transfer(11, 2, 3, 400_000, "USD", flags=int(TransferFlags.PENDING), timeout_s=30)
    assert ledger.submit([hold])[0].ok
    clock.advance(60)

    worker = Worker(store, payments_registry(payments), clock=clock)
    outcomes = worker.tick()
    assert sorted((o.name, o.state) for o in outcomes) == [
        ("aggregate_usage", "done"),
        ("close_tab_periods", "done"),
        ("expire_holds", "done"),
        ("renew_subscriptions", "done"),
        ("run_due_charges", "done"),
    ]
    assert ledger.accounts([2])[2].debits_pending_micros == 0  # the hold expired
    assert worker.tick() == []  # same period: nothing new
    clock.advance(60)
    assert sorted(o.name for o in worker.tick()) == ["expire_holds", "run_due_charges"]
    assert reconcile(store).ok


# --- subprocess entry point -------------------------------------------------------


def _child(mode: str, database_url: str, tag: str) -> None:
    store: Any = open_store(database_url)
    try:
        if mode == "race":
            worker = Worker(store, make_registry(store, tag), owner=tag)
            print("ready", flush=True)
            if sys.stdin.readline().strip() != "go":
                raise SystemExit(3)
            print(json.dumps([o.run_key for o in worker.run_due() if o.state == "done"]))
        elif mode == "hang":

            def hang(run_key: str) -> None:
                print(f"running {run_key}", flush=True)
                time.sleep(subprocess_timeout_s * 2)  # killed long before
                raise SystemExit(4)

            Worker(store, make_registry(store, tag, hang=hang), owner=tag).run_due()
        else:
            raise SystemExit(2)
    finally:
        store.close()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    _child(sys.argv[1], sys.argv[2], sys.argv[3])
