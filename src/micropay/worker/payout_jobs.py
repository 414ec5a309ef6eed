"""Payouts as durable worker jobs: release held shares, start scheduled payouts, pay them.

Three recurring ``run`` jobs (each idempotent, so a run re-done after a crash
changes nothing twice):

- ``release_payout_shares``: shares past their holding period move from the
  payee's pending to available (``Payouts.release_due``; each share once, by a
  compare-and-set on its row, in the transaction that moves the money).
- ``run_payouts``: releases what is due, then records this period's payout of
  each verified payee on a schedule at or above threshold (``pending``, its
  amount held; one per (payee, period), under the payee's account lock), then
  pays every pending payout as ``execute_payouts`` does.
- ``execute_payouts``: every pending payout is asked of the processor with its
  own idempotency key ``micropay-payout-<id>``, and the outcome posts or voids
  the hold at most once (``Payouts.run_pending``). A worker killed between the
  processor's answer and the ledger's record leaves the payout pending; the
  next run asks again with the same key and gets the first answer back. This
  is also how a payout the processor answered "retry" is finished.

The jobs call ``job.heartbeat()`` between payouts and pages, so a long run keeps
its lease, and stops if the lease was lost.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from micropay.worker.jobs import Job, JobSpec, Registry, drain_passes_max

if TYPE_CHECKING:
    from micropay.service.payouts import Payouts

payout_every_s_default: dict[str, int] = {
    "release_payout_shares": 300,
    "run_payouts": 3_600,
    "execute_payouts": 60,  # also retries payouts the processor answered "retry"
}
payout_lease_s = 120.0  # renewed by the jobs' heartbeats
payees_per_job_max = 1_000_000  # a run looks at every scheduled payee, 100 a page


def release_shares(payouts: Payouts, job: Job, batch: int = 1_000) -> int:
    """Release every due share, ``batch`` at a time (bounded passes); how many were released."""
    total = 0
    for _ in range(drain_passes_max):
        done = payouts.release_due(limit=batch)
        total += done
        job.heartbeat()
        if done < batch:
            break
    return total


def execute_pending(payouts: Payouts, job: Job, batch: int = 1_000) -> int:
    """Pay every pending payout (bounded passes); how many were asked of the processor.

    A pass that leaves as many payouts pending as it asked (the processor
    answered "retry" to all) ends the run: the next run asks again.
    """
    from micropay.service.payouts import PayoutStatus

    total = 0
    for _ in range(drain_passes_max):
        outcomes = payouts.run_pending(limit=batch, progress=job.heartbeat)
        total += len(outcomes)
        finished = sum(1 for o in outcomes if o.status is not PayoutStatus.pending)
        if len(outcomes) < batch or finished == 0:
            break
    return total


def run_payouts(payouts: Payouts, job: Job) -> int:
    """Release, start this period's payouts, pay what is pending; how many were asked."""
    release_shares(payouts, job)
    payouts.start_scheduled(payees_per_job_max, progress=job.heartbeat)
    return execute_pending(payouts, job)


def register_payout_jobs(
    registry: Registry,
    make_payouts: Callable[[], Payouts],
    every_s: Mapping[str, int] | None = None,
) -> None:
    """Add the payout jobs to a worker :class:`Registry`.

    ``make_payouts`` is called once per job run, in the worker's thread (a
    cached instance over the worker's own store connection is fine).
    """
    every = {**payout_every_s_default, **(every_s or {})}
    jobs: dict[str, Callable[[Job], object]] = {
        "release_payout_shares": lambda job: release_shares(make_payouts(), job),
        "run_payouts": lambda job: run_payouts(make_payouts(), job),
        "execute_payouts": lambda job: execute_pending(make_payouts(), job),
    }
    for name, run in jobs.items():
        registry.register(JobSpec(name, run=run, every_s=every[name], lease_s=payout_lease_s))
