"""A durable job runner in the database: several workers, each job run once.

Jobs live in the ``jobs`` table (``store/jobs_sql.py``). Each run of scheduled
work has a **run key** (``expire_holds:2026-01-01T00:05Z``): enqueueing the
same key twice is a no-op, so any number of schedulers may enqueue the same
period. A worker **claims** one due job at a time by a guarded UPDATE that
leases it for ``lease_s`` (only if it is unleased or its lease expired) and
counts an attempt; it runs it, then marks it done, again guarded by owning
the lease.

Two kinds of job:

- ``run_in_tx(tx, job)``: the job's effects are written in the transaction
  that marks it done. If the lease was lost (another worker took the job
  after it expired) the transaction is rolled back: exactly once, always.
- ``run(job)``: the job does its own transactions (or calls a processor) and
  MUST be idempotent. It is marked done after it returns. A worker that dies
  mid-job leaves its lease to expire; another worker then runs the job again.
  All of micropay's scheduled work is idempotent by construction: hold expiry
  uses reserved transfer ids, due charges and tab closing are compare-and-set
  on the charge/tab rows, renewals are keyed by (subscription, period), usage
  events are marked with their posting id.

A ``run`` job that may outlive its lease (a payout run of a thousand
processor calls) calls ``job.heartbeat()`` between units of work: at most once
a third of a lease, it moves the lease's expiry to a full lease from now; if
the lease was lost meanwhile (the worker stalled past it and another took the
job) it raises :class:`LeaseLost`, the job stops where it is, and the run ends
``lease_lost`` (its work so far is idempotent, like all of it).

A failing job is retried with exponential back-off (``backoff_s`` doubling,
capped at ``backoff_s_max``) up to ``attempts_max`` attempts, then ``failed``
with its last error kept. A job whose last attempt's worker died is failed
when its lease expires.

The periodic **scheduler** (:meth:`Worker.schedule`) enqueues each recurring
job once per period, keyed by the period's start; after an outage only the
current period is enqueued (the jobs catch up on everything due anyway).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from micropay.service.ledger import Clock, system_clock_us
from micropay.service.retry import run_with_retries
from micropay.store.jobs_sql import JobRow, JobsSql
from micropay.store.sql import as_mixin

T = TypeVar("T")

job_name_chars_max = 64
run_key_chars_max = 200
error_chars_max = 2_000
jobs_per_pass_max = 1_000
lease_s_default = 300.0
attempts_max_default = 5
backoff_s_default = 10.0
backoff_s_max_default = 3_600.0
drain_passes_max = 100
tab_page_rows = 10_000  # close_tab_periods reads one page per call (limits.page_rows_max)


def jobs_tx(tx: Any) -> JobsSql:
    """The jobs' SQL over a store transaction (bound to its cursor if not mixed in yet)."""
    return as_mixin(tx, JobsSql)


def _no_heartbeat() -> None:
    return None


@dataclass(frozen=True, slots=True)
class Job:
    """What a job's handler sees."""

    run_key: str
    name: str
    payload: dict[str, Any]
    due_at_us: int
    attempt: int  # 1 for the first
    # Renews the lease of a ``run`` job (raises LeaseLost if it is gone); a no-op in ``run_in_tx``.
    heartbeat: Callable[[], None] = field(default=_no_heartbeat, compare=False, repr=False)


@dataclass(frozen=True, slots=True)
class JobSpec:
    name: str
    run: Callable[[Job], object] | None = None
    run_in_tx: Callable[[Any, Job], object] | None = None
    every_s: int | None = None  # recurring: enqueued by the scheduler once per period
    lease_s: float = lease_s_default
    attempts_max: int = attempts_max_default
    backoff_s: float = backoff_s_default
    backoff_s_max: float = backoff_s_max_default

    def __post_init__(self) -> None:
        if not 0 < len(self.name) <= job_name_chars_max or ":" in self.name:
            raise ValueError("job name must be 1-64 characters without ':'")
        if (self.run is None) == (self.run_in_tx is None):
            raise ValueError(f"job {self.name}: give exactly one of run and run_in_tx")
        if self.every_s is not None and self.every_s < 1:
            raise ValueError(f"job {self.name}: every_s must be >= 1")
        if self.lease_s <= 0 or self.attempts_max < 1 or self.backoff_s < 0:
            raise ValueError(f"job {self.name}: lease_s > 0, attempts_max >= 1, backoff_s >= 0")

    def retry_delay_us(self, attempt: int) -> int:
        delay_s = min(self.backoff_s_max, self.backoff_s * 2 ** min(attempt - 1, 40))
        return int(delay_s * 1_000_000)


@dataclass
class Registry:
    specs: dict[str, JobSpec] = field(default_factory=dict)

    def register(self, spec: JobSpec) -> JobSpec:
        if spec.name in self.specs:
            raise ValueError(f"job {spec.name} is registered twice")
        self.specs[spec.name] = spec
        return spec

    def __getitem__(self, name: str) -> JobSpec:
        return self.specs[name]

    def names(self) -> list[str]:
        return sorted(self.specs)


@dataclass(frozen=True, slots=True)
class RunOutcome:
    run_key: str
    name: str
    state: str  # done | retry | failed | lease_lost
    error: str = ""


class LeaseLost(Exception):
    """The lease expired and another worker took the job: stop (and roll back a ``run_in_tx``)."""


def period_run_key(name: str, every_s: int, now_us: int) -> tuple[str, int]:
    """The run key and start (µs) of the period of ``every_s`` seconds containing ``now_us``."""
    every_us = every_s * 1_000_000
    start_us = now_us - now_us % every_us
    at = time.gmtime(start_us // 1_000_000)
    if every_s % 86_400 == 0:
        label = time.strftime("%Y-%m-%d", at)
    elif every_s % 60 == 0:
        label = time.strftime("%Y-%m-%dT%H:%MZ", at)
    else:
        label = time.strftime("%Y-%m-%dT%H:%M:%SZ", at)
    return f"{name}:{label}", start_us


def new_owner() -> str:
    return f"{socket.gethostname()[:40]}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class Worker:
    """Claims and runs due jobs on one store connection. One instance per thread."""

    def __init__(
        self,
        store: Any,
        registry: Registry,
        *,
        clock: Clock = system_clock_us,
        owner: str | None = None,
        names: Iterable[str] | None = None,
    ) -> None:
        self.store = store
        self.registry = registry
        self.clock = clock
        self.owner = owner or new_owner()
        chosen = registry.names() if names is None else sorted(set(names))
        unknown = [n for n in chosen if n not in registry.specs]
        if unknown:
            raise ValueError(f"unknown jobs: {', '.join(unknown)}")
        self.names = chosen

    def _tx(self, operation: Callable[[Any], T]) -> T:
        def once() -> T:
            with self.store.write() as tx:
                return operation(tx)

        return run_with_retries(once)

    # --- enqueueing -------------------------------------------------------

    def enqueue(
        self,
        name: str,
        run_key: str,
        *,
        due_at_us: int | None = None,
        payload: Mapping[str, Any] | None = None,
    ) -> bool:
        """Enqueue one run; False if ``run_key`` was already enqueued (then nothing changes)."""
        spec = self.registry[name]
        if not 0 < len(run_key) <= run_key_chars_max:
            raise ValueError("run key must be 1-200 characters")
        now_us = self.clock()
        due = now_us if due_at_us is None else due_at_us
        body = json.dumps(dict(payload or {}), sort_keys=True, separators=(",", ":"))
        return self._tx(
            lambda tx: jobs_tx(tx).enqueue_job(run_key, name, body, due, spec.attempts_max, now_us)
        )

    def schedule(self) -> list[str]:
        """Enqueue the current period's run of each recurring job; returns the keys new here."""
        now_us = self.clock()
        added = []
        for name in self.names:
            spec = self.registry[name]
            if spec.every_s is None:
                continue
            run_key, start_us = period_run_key(name, spec.every_s, now_us)
            if self.enqueue(name, run_key, due_at_us=start_us):
                added.append(run_key)
        return added

    # --- running ----------------------------------------------------------

    def run_next(self) -> RunOutcome | None:
        """Claim the most overdue job and run it; None if no job is due."""
        now_us = self.clock()

        def claim(tx: Any) -> JobRow | None:
            sql = jobs_tx(tx)
            sql.fail_exhausted_jobs(now_us)
            lease_us = max(int(s.lease_s * 1_000_000) for s in self.registry.specs.values())
            # Each job's own lease: claimed with the longest, shortened right after.
            row = sql.claim_due_job(self.owner, now_us, now_us + lease_us, self.names)
            if row is not None:
                own_us = now_us + int(self.registry[row.name].lease_s * 1_000_000)
                if own_us != row.lease_expires_at_us:
                    sql.set_job_lease(row.run_key, self.owner, own_us)
            return row

        row = self._tx(claim)
        if row is None:
            return None
        spec = self.registry[row.name]
        job = Job(
            row.run_key,
            row.name,
            json.loads(row.payload),
            row.due_at_us,
            row.attempts,
            _no_heartbeat if spec.run is None else self._heartbeat(row.run_key, spec.lease_s),
        )
        try:
            if spec.run_in_tx is not None:
                run_in_tx = spec.run_in_tx

                def finish_with_effects(tx: Any) -> None:
                    # Lease check first: on PostgreSQL this also locks the row to commit.
                    if not jobs_tx(tx).finish_job(job.run_key, self.owner, self.clock()):
                        raise LeaseLost
                    run_in_tx(tx, job)

                self._tx(finish_with_effects)
                return RunOutcome(job.run_key, job.name, "done")
            assert spec.run is not None
            spec.run(job)
        except LeaseLost:
            return RunOutcome(job.run_key, job.name, "lease_lost")
        except Exception as error:  # any failure of a job is recorded and retried
            return self._failed(spec, job, error)
        owner = self.owner
        finished = self._tx(lambda tx: jobs_tx(tx).finish_job(job.run_key, owner, self.clock()))
        return RunOutcome(job.run_key, job.name, "done" if finished else "lease_lost")

    def _heartbeat(self, run_key: str, lease_s: float) -> Callable[[], None]:
        """Renew ``run_key``'s lease when a third of it has passed; LeaseLost if it is gone."""
        lease_us = int(lease_s * 1_000_000)
        renew_after_us = self.clock() + lease_us // 3
        owner = self.owner

        def heartbeat() -> None:
            nonlocal renew_after_us
            now_us = self.clock()
            if now_us < renew_after_us:
                return
            if not self._tx(
                lambda tx: jobs_tx(tx).set_job_lease(run_key, owner, now_us + lease_us)
            ):
                raise LeaseLost(run_key)
            renew_after_us = now_us + lease_us // 3

        return heartbeat

    def _failed(self, spec: JobSpec, job: Job, error: Exception) -> RunOutcome:
        text = f"{type(error).__name__}: {error}"[:error_chars_max]
        now_us = self.clock()
        retry_at_us = now_us + spec.retry_delay_us(job.attempt)
        state = self._tx(
            lambda tx: jobs_tx(tx).release_failed_job(
                job.run_key, self.owner, text, retry_at_us, now_us
            )
        )
        if state is None:
            return RunOutcome(job.run_key, job.name, "lease_lost", text)
        return RunOutcome(job.run_key, job.name, "retry" if state == "pending" else "failed", text)

    def run_due(self, limit: int = jobs_per_pass_max) -> list[RunOutcome]:
        """Run due jobs until none is left (at most ``limit``)."""
        outcomes = []
        for _ in range(min(limit, jobs_per_pass_max)):
            outcome = self.run_next()
            if outcome is None:
                break
            outcomes.append(outcome)
        return outcomes

    def tick(self) -> list[RunOutcome]:
        """One pass: enqueue the recurring jobs' current runs, then run what is due."""
        self.schedule()
        return self.run_due()

    def run_forever(self, stop: threading.Event, poll_s: float = 1.0) -> None:
        """Pass after pass until ``stop`` is set; waits ``poll_s`` when nothing was due."""
        while not stop.is_set():
            if not self.tick():
                stop.wait(poll_s)

    def jobs(self, state: str | None = None, limit: int = jobs_per_pass_max) -> list[JobRow]:
        return self._tx(lambda tx: jobs_tx(tx).list_jobs(limit, state))

    def job(self, run_key: str) -> JobRow | None:
        return self._tx(lambda tx: jobs_tx(tx).get_job(run_key))


# --- micropay's scheduled work ----------------------------------------------

every_s_default: dict[str, int] = {
    "expire_holds": 60,
    "run_due_charges": 60,  # crash recovery and dunning retries
    "close_tab_periods": 3_600,
    "renew_subscriptions": 3_600,
    "aggregate_usage": 3_600,
}


def _drain(step: Callable[[], list[Any]], limit: int, heartbeat: Callable[[], None]) -> int:
    """Call ``step`` until it returns fewer than ``limit`` items (bounded); total handled.

    ``heartbeat`` (the job's) runs after each step, so a long drain keeps its lease.
    """
    total = 0
    for _ in range(drain_passes_max):
        done = len(step())
        total += done
        heartbeat()
        if done < limit:
            break
    return total


def close_all_tab_periods(payments: Any, job: Job, page: int = tab_page_rows) -> int:
    """Close every tab whose period has ended, ``page`` at a time; how many were charged.

    ``close_tab_periods`` takes one page; this repeats while tabs are due and a
    page changed something (a page of only frozen tabs changes nothing: stop),
    renewing the job's lease between pages.
    """
    charges = payments.charges
    before_us = payments.clock() - charges.tab_policy.period_s * 1_000_000

    def due() -> list[int]:
        found: list[int] = charges.tx(
            lambda tx: tx.customers_with_tab_period_ended(before_us, page)
        )
        return found

    total = 0
    waiting = due()
    for _ in range(drain_passes_max * 10):
        if not waiting:
            break
        total += len(charges.close_tab_periods(limit=page))
        job.heartbeat()
        left = due()
        if left == waiting:
            break  # no progress (frozen tabs): the next run tries again
        waiting = left
    return total


def payments_registry(payments: Any, every_s: Mapping[str, int] | None = None) -> Registry:
    """The recurring, idempotent jobs of a :class:`~micropay.service.payments.Payments`."""
    from micropay.service.billing import Metering, Subscriptions

    every = {**every_s_default, **(every_s or {})}
    metering = Metering(payments)
    subscriptions = Subscriptions(payments)
    expiry_batch = 1_000
    charges_batch = 100
    registry = Registry()
    jobs: dict[str, Callable[[Job], object]] = {
        "expire_holds": lambda job: _drain(
            lambda: payments.ledger.expire_holds(limit=expiry_batch), expiry_batch, job.heartbeat
        ),
        # Pages of processor calls, the lease renewed between them.
        "run_due_charges": lambda job: _drain(
            lambda: payments.charges.run_due(limit=charges_batch), charges_batch, job.heartbeat
        ),
        "close_tab_periods": lambda job: close_all_tab_periods(payments, job),
        "renew_subscriptions": lambda job: subscriptions.renew_due(),
        # The window ends where the run's period starts: the same window on every retry.
        "aggregate_usage": lambda job: metering.aggregate_usage(job.due_at_us),
    }
    for name, run in jobs.items():
        registry.register(JobSpec(name, run=run, every_s=every[name]))
    return registry
