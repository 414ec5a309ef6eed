"""Durable scheduled work: jobs in the database, leased with timeouts (see ``jobs``)."""

from __future__ import annotations

from micropay.worker.jobs import (
    Job,
    JobSpec,
    LeaseLost,
    Registry,
    RunOutcome,
    Worker,
    payments_registry,
    period_run_key,
)
from micropay.worker.payout_jobs import register_payout_jobs

__all__ = [
    "Job",
    "JobSpec",
    "LeaseLost",
    "Registry",
    "RunOutcome",
    "Worker",
    "payments_registry",
    "period_run_key",
    "register_payout_jobs",
]
